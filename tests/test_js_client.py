"""wshub.js, the browser client: its unit tests (node --test, fake WebSocket
and clock) and its TypeScript declarations (tsc --strict over a usage file)."""

from __future__ import annotations

import json
import re
import subprocess

from js_tools import JS_TESTS, ROOT, STATIC, npm_bin, require_binary

TYPESCRIPT = "typescript@5.6.3"


def test_node_unit_tests_pass() -> None:
    node = require_binary("node", "nodejs")
    result = subprocess.run(
        [node, "--test", "--test-timeout=60000", "--test-reporter=tap", str(JS_TESTS)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    summary = [line for line in result.stdout.splitlines() if line.startswith("# ")]
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "# fail 0" in summary, summary
    assert not any(line.startswith("# pass 0") for line in summary), summary


def test_type_declarations_compile_strict() -> None:
    tsc = npm_bin(TYPESCRIPT, "tsc")
    result = subprocess.run(
        [
            str(tsc),
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
            "--lib",
            "es2022,dom",
            str(JS_TESTS / "types_check.mts"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_json_points_at_the_module_and_its_types() -> None:
    meta = json.loads((STATIC / "package.json").read_text(encoding="utf-8"))
    assert meta["type"] == "module"
    assert not meta.get("dependencies"), "wshub.js has no runtime dependencies"
    entry = meta["exports"]["."]
    for key in ("types", "import"):
        assert (STATIC / entry[key]).is_file(), entry[key]
    source = (STATIC / "wshub.js").read_text(encoding="utf-8")
    imports = [line for line in source.splitlines() if re.match(r"\s*import\b", line)]
    assert imports == [], "wshub.js imports nothing"


TERSER = "terser@5.51.0"


def test_the_readmes_size_figure_is_current_and_below_socket_io_client() -> None:
    """The README's minified and gzipped size, measured with its own command
    (terser, then ``gzip -9``), at its precision; and below socket.io-client's."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    text = " ".join(readme.split())
    claimed = re.search(r"\*\*([\d.]+) kB minified and gzipped\*\*", text)
    theirs = re.search(r"`socket\.io\.min\.js` is [\d.]+ kB, ([\d.]+) kB gzipped", text)
    assert claimed is not None, "the README's size sentence changed"
    assert theirs is not None, "the README's socket.io-client sentence changed"
    terser = npm_bin(TERSER, "terser")
    gzip = require_binary("gzip")
    command = [str(terser), str(STATIC / "wshub.js"), "--module", "--compress", "passes=2"]
    minified = subprocess.run(
        [*command, "--mangle"], capture_output=True, timeout=300, cwd=ROOT, check=True
    ).stdout
    size = len(subprocess.run([gzip, "-9"], input=minified, capture_output=True, check=True).stdout)
    assert f"{size / 1000:.1f}" == claimed.group(1), f"measured {size} bytes: update the README"
    assert size < float(theirs.group(1)) * 1000
