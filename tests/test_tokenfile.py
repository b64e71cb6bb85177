"""``wshub.tokenfile``: the owner-only token writer the CLI uses, offered to applications."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wshub.tokenfile import (
    generate_token,
    read_token_file,
    write_private_file,
    write_token_file,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def open_umask() -> object:
    old = os.umask(0)
    yield
    os.umask(old)


def test_generated_tokens_are_128_bit_base64url() -> None:
    tokens = {generate_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert len(token) == 22
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.usefixtures("open_umask")
def test_a_new_token_file_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "token"
    write_token_file(path, "abc")
    assert path.read_text() == "abc"
    assert mode(path) == 0o600


def test_an_existing_file_is_replaced_and_its_mode_tightened(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("an older and longer token\n")
    path.chmod(0o666)
    write_token_file(str(path), "new")
    assert path.read_text() == "new"
    assert mode(path) == 0o600


def test_exclusive_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("keep")
    with pytest.raises(FileExistsError):
        write_private_file(path, "other", exclusive=True)
    assert path.read_text() == "keep"


def test_a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    target, path = tmp_path / "target", tmp_path / "token"
    target.write_text("keep me")
    path.symlink_to(target)
    with pytest.raises(OSError):  # noqa: PT011 - ELOOP: any refusal is right, the target counts
        write_token_file(path, "t")
    assert target.read_text() == "keep me"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "created-through-the-link")
    with pytest.raises(OSError):  # noqa: PT011
        write_token_file(dangling, "t")
    assert not (tmp_path / "created-through-the-link").exists()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    with pytest.raises(OSError):  # noqa: PT011 - ENXIO: no reader; the point is no hang
        write_token_file(path, "t")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        write_token_file(tmp_path, "t")


def test_a_non_regular_file_that_opens_is_refused_untouched() -> None:
    # /dev/null opens for writing, but it is a character device, not a file.
    with pytest.raises(OSError, match="not a regular file"):
        write_token_file("/dev/null", "t")


@given(
    tokens=st.lists(
        st.text(
            st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
            min_size=1,
        ).filter(lambda t: t.strip() == t and not t.startswith("#")),
        min_size=1,
        max_size=5,
    ),
    comments=st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"))),
        max_size=3,
    ),
)
def test_read_token_file_returns_the_token_lines(
    tmp_path_factory: pytest.TempPathFactory, tokens: list[str], comments: list[str]
) -> None:
    path = tmp_path_factory.mktemp("t") / "tokens"
    lines = [f"# {c}" for c in comments] + ["", *[f"  {t}  " for t in tokens], ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    assert read_token_file(path) == tokens


def test_read_token_file_without_a_token(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_text("# nothing here\n\n   \n")
    with pytest.raises(ValueError, match="no token in the file"):
        read_token_file(path)


def test_written_token_reads_back(tmp_path: Path) -> None:
    token = generate_token()
    write_token_file(tmp_path / "t", token)
    assert read_token_file(tmp_path / "t") == [token]
