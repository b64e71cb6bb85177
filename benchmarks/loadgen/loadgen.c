/*
 * loadgen: a single-process epoll WebSocket load generator for the wshub benchmarks.
 *
 * It speaks just enough RFC 6455 to drive a server hard while costing little
 * itself: an HTTP upgrade (optional bearer token and subprotocol), a check of
 * the 101 status, pre-masked client frames, a streaming parser for server
 * frames (7/16/64-bit lengths, any split across reads), pongs for pings and
 * close frames. One thread, non-blocking sockets, level-triggered epoll.
 *
 * Scenarios (first argument):
 *   echo        N connections each keep K messages in flight; round trips/s, latency
 *   fanout      connection 0 publishes, N subscribers receive; window W of messages
 *               outstanding; deliveries/s, delivery latency. With --sub-port P
 *               (repeatable) the subscribers are spread over those ports (other
 *               nodes of a cluster) while the publisher stays on --port; with
 *               --socketio they all speak Socket.IO 5 / Engine.IO 4 over
 *               WebSocket instead of wshub's envelopes (see on_sio_frame);
 *               --max-rate R: at most R publications per second
 *   hold        open N connections (ramp of C pending), report, wait, verify each
 *               alive with a ping/pong; used for idle memory and max connections
 *   handshakes  C concurrent loops of connect, upgrade, 101, close, close echo, EOF
 *   parse-test  read stdin, feed it to the frame parser in the chunk sizes given,
 *               print one line per frame (used by the pytest test of the parser)
 *
 * It sleeps in epoll_wait when idle, so a server's send may have to wake it
 * (on loopback that wakeup is paid on the server's core); --busy-poll spins
 * instead, to measure how much that costs.
 *
 * Output: one JSON object per line on stdout ("event":"ready" for hold, then
 * "event":"result"). Errors go to stderr. Exit status 2 on usage errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CAP 256              /* bytes of each frame's payload kept for inspection */
#define HEAD_MAX 4096        /* largest HTTP response head accepted */
#define HIST_US (1u << 21)   /* latency histogram: 1 us buckets up to ~2.1 s */
#define STDIN_TAG 0xffffffffu
#define RING 65536           /* fan-out: per-sequence delivery counters (power of 2) */

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

enum scenario { SC_ECHO, SC_FANOUT, SC_HOLD, SC_HANDSHAKES };
enum cstate { C_FREE, C_CONNECTING, C_UPGRADING, C_OPEN, C_CLOSING, C_DONE };

typedef struct conn {
    int fd;
    uint8_t state;
    uint8_t want_out;      /* EPOLLOUT registered */
    uint8_t hdr_have, hdr_need, in_payload, opcode, fin, got_close;
    uint8_t subscribed, alive;
    uint16_t cap_len;
    uint64_t remaining, plen;
    uint32_t fnv;
    uint8_t hdr[14];
    uint8_t cap[CAP];
    char *head;            /* HTTP response head while upgrading */
    uint32_t head_len;
    uint8_t *tx;           /* bytes the socket did not take yet */
    uint32_t tx_len, tx_cap;
    uint64_t t_start;      /* ns: connect started (timeouts, handshake latency) */
    uint64_t *ring;        /* echo: send times of messages in flight */
    uint32_t r_head, r_count;
} conn;

/* ---- options ---- */
static enum scenario g_sc;
static const char *g_host = "127.0.0.1";
static int g_port;
static int g_conns = 100;
static double g_duration = 5, g_warmup = 1, g_timeout = 10, g_ramp_timeout = 120;
static int g_inflight = 1, g_size = 64, g_window = 8, g_concurrency = 100, g_hosts = 1;
static int g_subproto, g_hub, g_hold_stdin, g_busy_poll, g_socketio;
#define MAX_PORTS 17
static int g_ports[MAX_PORTS]; /* [0]: --port; then --sub-port values */
static int g_nports = 1;
static char **g_tokens;
static int g_ntokens;
static int g_test_fnv;

/* ---- state ---- */
static int g_ep;
static conn *g_c;
static int g_nc;               /* slots in g_c */
static char **g_req;           /* upgrade request per token and port */
static size_t *g_req_len;
static uint8_t *g_echo_frame;
static size_t g_echo_len;
static uint32_t *g_hist;
static uint64_t g_samples, g_count_measured;
static uint64_t g_meas_start, g_meas_end;
static int g_running;
static double g_cpu0 = -1, g_cpu1 = -1; /* own CPU seconds at window start and end */
static uint64_t g_opened, g_failed, g_timeouts, g_status_other, g_status_429, g_status_503,
    g_status_401, g_connect_err, g_reset, g_eof, g_server_close, g_proto_err, g_pending;
static int g_last_close_code = -1;
static uint64_t g_handshakes;
/* fan-out */
static uint64_t *g_sent_at;    /* send time per seq % RING */
static uint32_t *g_delivered;  /* deliveries per seq % RING */
static uint64_t g_next_seq = 1, g_done_seq = 1; /* seqs < g_done_seq reached everyone */
static uint64_t g_deliveries_measured, g_deliveries_total, g_publish_errors;
static uint64_t g_subscribers_ready;
static uint64_t g_last_progress;
static uint64_t g_pub_interval, g_last_pub; /* ns: --max-rate paces the publisher */
static double g_max_rate;
/* hold */
static uint64_t g_alive, g_pings_sent;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CPU time (user + system) this process used so far, in seconds. */
static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) die("out of memory");
    return p;
}

/* ---- frames ---- */

/* A masked client frame of `opcode` with `payload` into `out`; returns its length. */
static size_t build_frame(uint8_t *out, int opcode, const uint8_t *payload, size_t n) {
    size_t h = 0;
    out[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        out[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(n >> 8);
        out[h++] = (uint8_t)n;
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) out[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    memcpy(out + h, MASK, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) out[h + i] = payload[i] ^ MASK[i & 3];
    return h + n;
}

/* ---- output side of a connection ---- */

static void set_out(conn *c, int on) {
    if (c->want_out == on) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.u32 = (uint32_t)(c - g_c)};
    epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = (uint8_t)on;
}

static void close_conn(conn *c);

/* Write now what the socket takes; keep the rest for EPOLLOUT. */
static void conn_send(conn *c, const void *data, size_t n) {
    const uint8_t *p = data;
    if (c->tx_len == 0) {
        ssize_t w = write(c->fd, p, n);
        if (w < 0) {
            if (errno != EAGAIN) {
                g_reset++;
                close_conn(c);
                return;
            }
            w = 0;
        }
        p += w;
        n -= (size_t)w;
        if (n == 0) return;
    }
    if (c->tx_len + n > c->tx_cap) {
        uint32_t cap = c->tx_cap ? c->tx_cap : 256;
        while (cap < c->tx_len + n) cap *= 2;
        c->tx = realloc(c->tx, cap);
        if (!c->tx) die("out of memory");
        c->tx_cap = cap;
    }
    memcpy(c->tx + c->tx_len, p, n);
    c->tx_len += (uint32_t)n;
    set_out(c, 1);
}

static void flush_out(conn *c) {
    if (c->tx_len == 0) {
        set_out(c, 0);
        return;
    }
    ssize_t w = write(c->fd, c->tx, c->tx_len);
    if (w < 0) {
        if (errno == EAGAIN) return;
        g_reset++;
        close_conn(c);
        return;
    }
    memmove(c->tx, c->tx + w, c->tx_len - (size_t)w);
    c->tx_len -= (uint32_t)w;
    if (c->tx_len == 0) set_out(c, 0);
}

static void send_control(conn *c, int opcode, const uint8_t *payload, size_t n) {
    uint8_t buf[256];
    size_t len = build_frame(buf, opcode, payload, n);
    conn_send(c, buf, len);
}

/* ---- latency histogram ---- */

static void record_latency(uint64_t ns) {
    uint64_t us = ns / 1000;
    if (us >= HIST_US) us = HIST_US - 1;
    g_hist[us]++;
    g_samples++;
}

static double percentile(double q) {
    if (g_samples == 0) return -1;
    uint64_t rank = (uint64_t)(q * (double)(g_samples - 1)) + 1, seen = 0;
    for (uint32_t i = 0; i < HIST_US; i++) {
        seen += g_hist[i];
        if (seen >= rank) return i;
    }
    return HIST_US - 1;
}

/* ---- connection life ---- */

static void start_conn(conn *c, int idx);

static void close_conn(conn *c) {
    if (c->state == C_FREE || c->state == C_DONE) return;
    if (c->state == C_CONNECTING || c->state == C_UPGRADING) g_pending--;
    if (c->state == C_OPEN || c->state == C_CLOSING) g_opened--;
    close(c->fd);
    c->fd = -1;
    c->state = C_DONE;
    free(c->head);
    c->head = NULL;
    c->tx_len = 0;
    c->want_out = 0;
}

/* Close a connection that failed; the handshake loops start a new one in its slot. */
static void drop(conn *c) {
    close_conn(c);
    if (g_sc == SC_HANDSHAKES && g_running) start_conn(c, (int)(c - g_c));
}

static int parse_status(const char *head) {
    if (strncmp(head, "HTTP/1.1 ", 9) != 0) return -1;
    return atoi(head + 9);
}

static void on_open(conn *c);
static void on_frame(conn *c);

/* Index in g_ports of connection `idx`: fan-out subscribers round-robin over
 * the --sub-port values when there are any; everything else on --port. */
static int port_index(int idx) {
    if (g_sc != SC_FANOUT || g_nports == 1 || idx == 0) return 0;
    return 1 + (idx - 1) % (g_nports - 1);
}

/* Feed server bytes to the streaming frame parser of `c`. */
static void feed(conn *c, const uint8_t *p, size_t n) {
    while (n > 0 && (c->state == C_OPEN || c->state == C_CLOSING)) {
        if (!c->in_payload) {
            if (c->hdr_have < 2) c->hdr_need = 2;
            while (n > 0 && c->hdr_have < c->hdr_need) {
                c->hdr[c->hdr_have++] = *p++;
                n--;
                if (c->hdr_have == 2) {
                    uint8_t l7 = c->hdr[1] & 0x7f;
                    c->hdr_need = (uint8_t)(2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) +
                                            ((c->hdr[1] & 0x80) ? 4 : 0));
                }
            }
            if (c->hdr_have < c->hdr_need) return;
            uint8_t l7 = c->hdr[1] & 0x7f;
            uint64_t len = l7;
            if (l7 == 126) {
                len = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
            } else if (l7 == 127) {
                len = 0;
                for (int i = 0; i < 8; i++) len = (len << 8) | c->hdr[2 + i];
            }
            if (c->hdr[1] & 0x80) g_proto_err++; /* servers must not mask */
            c->opcode = c->hdr[0] & 0x0f;
            c->fin = (c->hdr[0] >> 7) & 1;
            c->plen = len;
            c->remaining = len;
            c->cap_len = 0;
            c->fnv = 2166136261u;
            c->in_payload = 1;
        }
        size_t take = c->remaining < n ? (size_t)c->remaining : n;
        if (c->cap_len < CAP) {
            size_t room = (size_t)CAP - c->cap_len;
            size_t k = room < take ? room : take;
            memcpy(c->cap + c->cap_len, p, k);
            c->cap_len = (uint16_t)(c->cap_len + k);
        }
        if (g_test_fnv) {
            for (size_t i = 0; i < take; i++) c->fnv = (c->fnv ^ p[i]) * 16777619u;
        }
        p += take;
        n -= take;
        c->remaining -= take;
        if (c->remaining == 0) {
            c->in_payload = 0;
            c->hdr_have = 0;
            on_frame(c);
        }
    }
}

static void on_readable(conn *c, uint8_t *buf, size_t bufsize) {
    ssize_t r = read(c->fd, buf, bufsize);
    if (r < 0) {
        if (errno == EAGAIN) return;
        if (g_sc == SC_HANDSHAKES && c->got_close) goto finished;
        if (c->state == C_UPGRADING) g_failed++;
        g_reset++;
        drop(c);
        return;
    }
    if (r == 0) {
        if (g_sc == SC_HANDSHAKES && c->got_close) goto finished;
        if (c->state == C_UPGRADING) g_failed++;
        g_eof++;
        drop(c);
        return;
    }
    if (c->state == C_UPGRADING) {
        size_t room = HEAD_MAX - c->head_len - 1;
        size_t k = (size_t)r < room ? (size_t)r : room;
        memcpy(c->head + c->head_len, buf, k);
        c->head_len += (uint32_t)k;
        c->head[c->head_len] = 0;
        const char *end = strstr(c->head, "\r\n\r\n");
        if (!end) {
            if (c->head_len >= HEAD_MAX - 1) {
                g_proto_err++;
                g_failed++;
                drop(c);
            }
            return;
        }
        size_t head_bytes = (size_t)(end - c->head) + 4;
        int status = parse_status(c->head);
        size_t from_buf = head_bytes - (c->head_len - k); /* bytes of buf in the head */
        if (status != 101) {
            if (status == 429) g_status_429++;
            else if (status == 503) g_status_503++;
            else if (status == 401) g_status_401++;
            else g_status_other++;
            g_failed++;
            drop(c);
            return;
        }
        free(c->head);
        c->head = NULL;
        c->state = C_OPEN;
        g_pending--;
        g_opened++;
        on_open(c);
        if ((size_t)r > from_buf) feed(c, buf + from_buf, (size_t)r - from_buf);
        return;
    }
    feed(c, buf, (size_t)r);
    return;
finished:
    /* handshakes: the close echo arrived and the server ended the TCP connection */
    {
        uint64_t t = now_ns();
        if (t >= g_meas_start && t < g_meas_end) {
            g_handshakes++;
            record_latency(t - c->t_start);
        }
    }
    close_conn(c);
    if (g_running) start_conn(c, (int)(c - g_c));
}

static void on_connected(conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        g_connect_err++;
        g_failed++;
        drop(c);
        return;
    }
    c->state = C_UPGRADING;
    c->head = xmalloc(HEAD_MAX);
    c->head_len = 0;
    int idx = (int)(c - g_c);
    int r = (idx % g_ntokens) * g_nports + port_index(idx);
    set_out(c, 0);
    conn_send(c, g_req[r], g_req_len[r]);
}

static void start_conn(conn *c, int idx) {
    memset(c, 0, offsetof(conn, tx)); /* tx buffer and echo ring are kept for reuse */
    c->tx_len = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        g_connect_err++;
        g_failed++;
        c->state = C_DONE;
        c->fd = -1;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (g_hosts > 1) {
        /* spread clients over source addresses 127.0.0.1, .2, ... (distinct hosts) */
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(idx % g_hosts));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind to a source address");
    }
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)g_ports[port_index(idx)])};
    inet_pton(AF_INET, g_host, &dst.sin_addr);
    c->fd = fd;
    c->state = C_CONNECTING;
    c->t_start = now_ns();
    g_pending++;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)idx};
    c->want_out = 1;
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        g_connect_err++;
        g_failed++;
        close_conn(c);
    }
}

/* ---- scenario behaviour ---- */

static int g_parse_test;
static uint64_t g_started;     /* connection slots started (ramp) */
static int g_nsubs;            /* fan-out: subscribers that confirmed */
static char g_pub_prefix[] = "{\"message_type\":\"publish\",\"topic\":\"bench\",\"payload\":\"~s";
static char g_sio_pub_prefix[] = "42[\"publish\",{\"topic\":\"bench\",\"payload\":\"~s";
static const char SIO_SUBSCRIBE[] = "420[\"subscribe\",\"bench\"]";
static const char SUBSCRIBE[] =
    "{\"message_type\":\"subscribe\",\"payload\":null,\"timestamp\":0,\"id\":1,\"topic\":\"bench\"}";

static int in_window(uint64_t t) { return t >= g_meas_start && t < g_meas_end; }

static void echo_send(conn *c, uint64_t t) {
    c->ring[(c->r_head + c->r_count) % (uint32_t)g_inflight] = t;
    c->r_count++;
    conn_send(c, g_echo_frame, g_echo_len);
}

static void publish_one(uint64_t t) {
    conn *pub = &g_c[0];
    if (pub->state != C_OPEN) return;
    uint8_t payload[4096], frame[4200];
    const char *prefix = g_socketio ? g_sio_pub_prefix : g_pub_prefix;
    int n = snprintf((char *)payload, sizeof payload, "%s%012" PRIu64 "~", prefix, g_next_seq);
    int body = (int)strlen(prefix); /* the payload string starts here */
    while (n - body < g_size && n < (int)sizeof payload - 4) payload[n++] = 'x';
    payload[n++] = '"';
    payload[n++] = '}';
    if (g_socketio) payload[n++] = ']';
    size_t len = build_frame(frame, 0x1, payload, (size_t)n);
    g_sent_at[g_next_seq % RING] = t;
    g_delivered[g_next_seq % RING] = 0;
    g_next_seq++;
    conn_send(pub, frame, len);
}

static void pump_publisher(uint64_t t) {
    if (!g_running) return;
    while (g_next_seq - g_done_seq < (uint64_t)g_window) {
        if (g_pub_interval) {
            if (g_last_pub && t < g_last_pub + g_pub_interval) return;
            g_last_pub = t;
        }
        publish_one(t);
    }
}

static void on_open(conn *c) {
    if (g_socketio) {
        return; /* Engine.IO speaks first (its open packet): see on_sio_frame */
    } else if (g_sc == SC_FANOUT && c != g_c && g_hub) {
        uint8_t frame[256];
        size_t len = build_frame(frame, 0x1, (const uint8_t *)SUBSCRIBE, sizeof SUBSCRIBE - 1);
        conn_send(c, frame, len);
    } else if (g_sc == SC_HANDSHAKES) {
        static const uint8_t code[2] = {0x03, 0xe8};
        c->state = C_CLOSING;
        send_control(c, 0x8, code, 2);
    }
}

static int contains(const conn *c, const char *needle) {
    return memmem(c->cap, c->cap_len, needle, strlen(needle)) != NULL;
}

static int starts_with(const conn *c, const char *prefix) {
    size_t n = strlen(prefix);
    return c->cap_len >= n && memcmp(c->cap, prefix, n) == 0;
}

static void send_text(conn *c, const char *text) {
    uint8_t frame[512];
    size_t len = build_frame(frame, 0x1, (const uint8_t *)text, strlen(text));
    conn_send(c, frame, len);
}

/* The Socket.IO side of a text frame; 1 when it was protocol, not a delivery.
 * Engine.IO 4 packets: "0{...}" open (we answer with the namespace connect
 * "40{auth}"), "2" ping (answered "3"); Socket.IO 5 packets inside: "40{sid}"
 * namespace connected (a subscriber then sends 420["subscribe","bench"], whose
 * acknowledgement is "430[true]"), "44{...}" connect refused, "42[...]" events. */
static int on_sio_frame(conn *c) {
    if (c->cap_len == 1 && c->cap[0] == '2') {
        send_text(c, "3");
        return 1;
    }
    if (starts_with(c, "0{")) {
        char auth[300];
        snprintf(auth, sizeof auth, "40{\"token\":\"%s\"}", g_tokens[(c - g_c) % g_ntokens]);
        send_text(c, auth);
        return 1;
    }
    if (starts_with(c, "44")) {
        g_publish_errors++;
        return 1;
    }
    if (starts_with(c, "40")) {
        if (c == g_c) {
            c->subscribed = 1; /* the publisher: ready once its namespace is connected */
        } else {
            send_text(c, SIO_SUBSCRIBE);
        }
        return 1;
    }
    if (starts_with(c, "43")) {
        if (c != g_c && !c->subscribed && starts_with(c, "430[true]")) {
            c->subscribed = 1;
            g_subscribers_ready++;
        } else {
            g_publish_errors++;
        }
        return 1;
    }
    return !starts_with(c, "42");
}

/* The publisher may send: its upgrade is done (and, with Socket.IO, its namespace). */
static int publisher_ready(void) {
    return g_c[0].state == C_OPEN && (!g_socketio || g_c[0].subscribed);
}

static void on_frame(conn *c) {
    if (g_parse_test) {
        printf("%d %d %" PRIu64 " %08x\n", c->opcode, c->fin, c->plen, c->fnv);
        return;
    }
    uint64_t t = now_ns();
    switch (c->opcode) {
    case 0x9: /* ping: answer with the same payload */
        send_control(c, 0xA, c->cap, c->cap_len < 125 ? c->cap_len : 125);
        return;
    case 0xA: /* pong: the liveness check of `hold` */
        if (!c->alive && c->cap_len >= 5 && memcmp(c->cap, "alive", 5) == 0) {
            c->alive = 1;
            g_alive++;
        }
        return;
    case 0x8:
        if (g_sc == SC_HANDSHAKES && c->state == C_CLOSING) {
            c->got_close = 1; /* now wait for the server to end the TCP connection */
            return;
        }
        g_server_close++;
        g_last_close_code = c->cap_len >= 2 ? (c->cap[0] << 8 | c->cap[1]) : 1005;
        drop(c);
        return;
    default:
        break;
    }
    if (!c->fin) return; /* only whole messages count */
    if (g_sc == SC_ECHO) {
        if (c->r_count == 0) {
            g_proto_err++;
            return;
        }
        uint64_t sent = c->ring[c->r_head];
        c->r_head = (c->r_head + 1) % (uint32_t)g_inflight;
        c->r_count--;
        if (in_window(t)) {
            g_count_measured++;
            record_latency(t - sent);
        }
        if (g_running) echo_send(c, t);
    } else if (g_sc == SC_FANOUT) {
        if (g_socketio && c->opcode == 0x1 && on_sio_frame(c)) return;
        if (c == g_c) {
            if (g_socketio) return;
            if (contains(c, "\"message_type\":\"error\"") || contains(c, "\"ok\":false"))
                g_publish_errors++;
            return;
        }
        if (!g_socketio && !c->subscribed && contains(c, "\"message_type\":\"reply\"")) {
            if (contains(c, "\"ok\":true")) {
                c->subscribed = 1;
                g_subscribers_ready++;
            } else {
                g_publish_errors++;
            }
            return;
        }
        const uint8_t *m = memmem(c->cap, c->cap_len, "~s", 2);
        if (!m || !c->subscribed) return; /* welcome and other envelopes */
        uint64_t seq = strtoull((const char *)m + 2, NULL, 10);
        if (seq < g_done_seq || seq >= g_next_seq) {
            g_proto_err++;
            return;
        }
        g_deliveries_total++;
        g_last_progress = t;
        if (in_window(t)) {
            g_deliveries_measured++;
            record_latency(t - g_sent_at[seq % RING]);
        }
        g_delivered[seq % RING]++;
        while (g_done_seq < g_next_seq &&
               g_delivered[g_done_seq % RING] >= (uint32_t)g_nsubs)
            g_done_seq++;
        pump_publisher(t);
    }
}

/* ---- the event loop ---- */

static void ramp(uint64_t limit) {
    while (g_started < limit && g_pending < (uint64_t)g_concurrency) {
        start_conn(&g_c[g_started], (int)g_started);
        g_started++;
    }
}

static void expire(uint64_t t) {
    uint64_t limit = (uint64_t)(g_timeout * 1e9);
    for (int i = 0; i < g_nc; i++) {
        conn *c = &g_c[i];
        int stuck = c->state == C_CONNECTING || c->state == C_UPGRADING ||
                    (g_sc == SC_HANDSHAKES && c->state == C_CLOSING);
        if (stuck && t > c->t_start + limit) {
            g_timeouts++;
            g_failed++;
            drop(c);
        } else if (g_sc == SC_HANDSHAKES && g_running && c->state == C_DONE) {
            start_conn(c, i); /* a slot lost to a failed write or connect */
        }
    }
}

static int stdin_line(void) {
    char buf[256];
    ssize_t r = read(0, buf, sizeof buf);
    return r <= 0 || memchr(buf, '\n', (size_t)r) != NULL;
}

static void print_common(void) {
    printf("\"opened\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"status_401\":%" PRIu64
           ",\"status_429\":%" PRIu64 ",\"status_503\":%" PRIu64 ",\"status_other\":%" PRIu64
           ",\"connect_errors\":%" PRIu64 ",\"timeouts\":%" PRIu64 ",\"resets\":%" PRIu64
           ",\"eofs\":%" PRIu64 ",\"server_closes\":%" PRIu64 ",\"last_close_code\":%d"
           ",\"protocol_errors\":%" PRIu64,
           g_opened, g_failed, g_status_401, g_status_429, g_status_503, g_status_other,
           g_connect_err, g_timeouts, g_reset, g_eof, g_server_close, g_last_close_code,
           g_proto_err);
}

/* Latency percentiles, and how busy the generator itself was in the window. */
static void print_latency(double secs) {
    printf(",\"p50_us\":%.0f,\"p99_us\":%.0f,\"samples\":%" PRIu64, percentile(0.50),
           percentile(0.99), g_samples);
    if (g_cpu0 >= 0 && secs > 0) printf(",\"loadgen_cpu\":%.3f", (g_cpu1 - g_cpu0) / secs);
}

static int run(void) {
    struct epoll_event evs[1024];
    static uint8_t buf[1 << 18];
    uint64_t start = now_ns(), last_scan = start, t = start;
    uint64_t target = (uint64_t)g_nc;
    enum { CONNECT, RUN, HOLD_WAIT, VERIFY } phase = CONNECT;
    int stdin_seen = 0;
    uint64_t hold_until = 0, verify_until = 0, opened_at_verify = 0;
    double ramp_s = 0;

    if (g_sc == SC_HANDSHAKES) {
        g_running = 1;
        g_meas_start = start + (uint64_t)(g_warmup * 1e9);
        g_meas_end = g_meas_start + (uint64_t)(g_duration * 1e9);
        for (int i = 0; i < g_nc; i++) start_conn(&g_c[i], i);
        g_started = target;
        phase = RUN;
    }
    for (;;) {
        int n = epoll_wait(g_ep, evs, 1024, g_busy_poll ? 0 : 2);
        t = now_ns();
        for (int i = 0; i < n; i++) {
            uint32_t tag = evs[i].data.u32;
            if (tag == STDIN_TAG) {
                if (stdin_line()) stdin_seen = 1;
                epoll_ctl(g_ep, EPOLL_CTL_DEL, 0, NULL);
                continue;
            }
            conn *c = &g_c[tag];
            uint32_t e = evs[i].events;
            if (c->state == C_CONNECTING) {
                on_connected(c);
                continue;
            }
            if ((e & EPOLLOUT) && c->state != C_DONE) flush_out(c);
            if ((e & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->state != C_DONE)
                on_readable(c, buf, sizeof buf);
        }
        if (t - last_scan > 100000000ull) {
            last_scan = t;
            expire(t);
        }
        if (phase == CONNECT) {
            ramp(target);
            int settled = g_started == target && g_pending == 0;
            if (g_sc == SC_FANOUT && settled && g_publish_errors == 0 &&
                g_subscribers_ready + (uint64_t)publisher_ready() < g_opened)
                settled = 0; /* wait for the subscribe replies */
            if (!settled && t < start + (uint64_t)(g_ramp_timeout * 1e9)) continue;
            ramp_s = (double)(t - start) / 1e9;
            if (g_sc == SC_HOLD) {
                printf("{\"event\":\"ready\",\"scenario\":\"hold\",\"requested\":%d,\"ramp_s\":%.3f,",
                       g_nc, ramp_s);
                print_common();
                printf("}\n");
                fflush(stdout);
                if (g_hold_stdin) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = STDIN_TAG};
                    epoll_ctl(g_ep, EPOLL_CTL_ADD, 0, &ev);
                }
                hold_until = t + (uint64_t)(g_duration * 1e9);
                phase = HOLD_WAIT;
                continue;
            }
            if (g_opened == 0) break;
            g_running = 1;
            g_meas_start = t + (uint64_t)(g_warmup * 1e9);
            g_meas_end = g_meas_start + (uint64_t)(g_duration * 1e9);
            g_last_progress = t;
            if (g_sc == SC_ECHO) {
                for (int i = 0; i < g_nc; i++)
                    if (g_c[i].state == C_OPEN)
                        for (int k = 0; k < g_inflight; k++) echo_send(&g_c[i], t);
            } else if (g_sc == SC_FANOUT) {
                g_nsubs = (int)g_subscribers_ready;
                if (!publisher_ready() || g_nsubs == 0) break;
                pump_publisher(t);
            }
            phase = RUN;
        } else if (phase == RUN) {
            if (g_cpu0 < 0 && t >= g_meas_start) g_cpu0 = cpu_seconds();
            if (g_sc == SC_FANOUT && t > g_last_progress + 5000000000ull) break; /* stalled */
            if (g_sc == SC_FANOUT && g_pub_interval) pump_publisher(t);
            if (t >= g_meas_end) break;
        } else if (phase == HOLD_WAIT) {
            if (g_hold_stdin ? stdin_seen : t >= hold_until) {
                opened_at_verify = g_opened;
                for (int i = 0; i < g_nc; i++)
                    if (g_c[i].state == C_OPEN) send_control(&g_c[i], 0x9, (const uint8_t *)"alive", 5);
                g_pings_sent = opened_at_verify;
                verify_until = t + 10000000000ull;
                phase = VERIFY;
            }
        } else if (phase == VERIFY) {
            if (g_alive >= opened_at_verify || t >= verify_until) break;
        }
    }
    g_running = 0;
    if (g_cpu0 >= 0) g_cpu1 = cpu_seconds();
    double secs = (double)(g_meas_end - g_meas_start) / 1e9;
    if (phase == RUN && t < g_meas_end) secs = t > g_meas_start ? (double)(t - g_meas_start) / 1e9 : 0;
    printf("{\"event\":\"result\",");
    switch (g_sc) {
    case SC_ECHO:
        printf("\"scenario\":\"echo\",\"requested\":%d,\"inflight\":%d,\"size\":%d,", g_nc,
               g_inflight, g_size);
        print_common();
        printf(",\"round_trips\":%" PRIu64 ",\"seconds\":%.3f,\"rate\":%.1f", g_count_measured,
               secs, secs > 0 ? (double)g_count_measured / secs : 0.0);
        print_latency(secs);
        break;
    case SC_FANOUT:
        printf("\"scenario\":\"fanout\",\"requested\":%d,\"subscribers\":%d,\"window\":%d,"
               "\"size\":%d,",
               g_nc - 1, g_nsubs, g_window, g_size);
        print_common();
        printf(",\"deliveries\":%" PRIu64 ",\"deliveries_total\":%" PRIu64
               ",\"messages_done\":%" PRIu64 ",\"publish_errors\":%" PRIu64
               ",\"stalled\":%s,\"seconds\":%.3f,\"rate\":%.1f",
               g_deliveries_measured, g_deliveries_total, g_done_seq - 1, g_publish_errors,
               phase == RUN && t < g_meas_end ? "true" : "false", secs,
               secs > 0 ? (double)g_deliveries_measured / secs : 0.0);
        print_latency(secs);
        break;
    case SC_HOLD:
        printf("\"scenario\":\"hold\",\"requested\":%d,\"ramp_s\":%.3f,", g_nc, ramp_s);
        print_common();
        printf(",\"open_at_verify\":%" PRIu64 ",\"alive\":%" PRIu64, opened_at_verify, g_alive);
        break;
    case SC_HANDSHAKES:
        printf("\"scenario\":\"handshakes\",\"concurrency\":%d,", g_nc);
        print_common();
        printf(",\"handshakes\":%" PRIu64 ",\"seconds\":%.3f,\"rate\":%.1f", g_handshakes, secs,
               secs > 0 ? (double)g_handshakes / secs : 0.0);
        print_latency(secs);
        break;
    }
    printf("}\n");
    fflush(stdout);
    return 0;
}

/* ---- parse-test: stdin through the frame parser in the given chunk sizes ---- */

static int parse_test(int argc, char **argv) {
    size_t cap = 1 << 16, len = 0;
    uint8_t *data = xmalloc(cap);
    ssize_t r;
    while ((r = read(0, data + len, cap - len)) > 0) {
        len += (size_t)r;
        if (len == cap) {
            cap *= 2;
            data = realloc(data, cap);
            if (!data) die("out of memory");
        }
    }
    g_parse_test = 1;
    g_test_fnv = 1;
    conn c;
    memset(&c, 0, sizeof c);
    c.state = C_OPEN;
    c.fd = -1;
    size_t off = 0;
    for (int i = 0; off < len; i++) {
        size_t chunk = argc > 0 ? strtoull(argv[i % argc], NULL, 10) : len;
        if (chunk == 0) chunk = 1;
        if (chunk > len - off) chunk = len - off;
        feed(&c, data + off, chunk);
        off += chunk;
    }
    printf("end %d %" PRIu64 "\n", c.in_payload || c.hdr_have, c.remaining);
    return 0;
}

/* ---- setup ---- */

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen echo|fanout|hold|handshakes --port P [--host H] [--conns N]\n"
            "  [--duration S] [--warmup S] [--timeout S] [--ramp-timeout S] [--inflight K] [--size B]\n"
            "  [--window W] [--concurrency C] [--hosts H] [--token T]... [--subprotocol]\n"
            "  [--hub] [--hold-stdin] [--busy-poll] [--sub-port P]... [--socketio] [--max-rate R]\n"
            "       loadgen parse-test [CHUNK...] < frames\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    if (strcmp(argv[1], "parse-test") == 0) return parse_test(argc - 2, argv + 2);
    if (strcmp(argv[1], "echo") == 0) g_sc = SC_ECHO;
    else if (strcmp(argv[1], "fanout") == 0) g_sc = SC_FANOUT;
    else if (strcmp(argv[1], "hold") == 0) g_sc = SC_HOLD;
    else if (strcmp(argv[1], "handshakes") == 0) g_sc = SC_HANDSHAKES;
    else usage();
    g_tokens = xmalloc(sizeof(char *) * (size_t)argc);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && ++i)
        if (OPT("--host")) g_host = v;
        else if (OPT("--port")) g_port = atoi(v);
        else if (OPT("--conns")) g_conns = atoi(v);
        else if (OPT("--duration")) g_duration = atof(v);
        else if (OPT("--warmup")) g_warmup = atof(v);
        else if (OPT("--timeout")) g_timeout = atof(v);
        else if (OPT("--ramp-timeout")) g_ramp_timeout = atof(v);
        else if (OPT("--inflight")) g_inflight = atoi(v);
        else if (OPT("--size")) g_size = atoi(v);
        else if (OPT("--window")) g_window = atoi(v);
        else if (OPT("--concurrency")) g_concurrency = atoi(v);
        else if (OPT("--hosts")) g_hosts = atoi(v);
        else if (OPT("--max-rate")) g_max_rate = atof(v);
        else if (OPT("--token")) g_tokens[g_ntokens++] = (char *)v;
        else if (OPT("--sub-port")) {
            if (g_nports == MAX_PORTS) usage();
            g_ports[g_nports++] = atoi(v);
        }
        else if (strcmp(a, "--subprotocol") == 0) g_subproto = 1;
        else if (strcmp(a, "--hub") == 0) g_hub = 1;
        else if (strcmp(a, "--hold-stdin") == 0) g_hold_stdin = 1;
        else if (strcmp(a, "--busy-poll") == 0) g_busy_poll = 1;
        else if (strcmp(a, "--socketio") == 0) g_socketio = 1;
        else usage();
#undef OPT
    }
    if (g_port <= 0 || g_conns <= 0 || g_inflight <= 0 || g_window <= 0 ||
        g_window >= RING / 2 || g_size < 0 || g_size > 4000 || g_hosts < 1 || g_hosts > 250 ||
        g_concurrency <= 0 || (g_socketio && g_sc != SC_FANOUT) || !(g_max_rate >= 0))
        usage();
    if (g_max_rate > 0) g_pub_interval = (uint64_t)(1e9 / g_max_rate);
    g_ports[0] = g_port;
    for (int i = 1; i < g_nports; i++)
        if (g_ports[i] <= 0) usage();

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((uint64_t)g_conns + 16 > rl.rlim_cur) {
        fprintf(stderr, "loadgen: RLIMIT_NOFILE %llu: capping connections at %llu\n",
                (unsigned long long)rl.rlim_cur, (unsigned long long)(rl.rlim_cur - 16));
        g_conns = (int)(rl.rlim_cur - 16);
    }
    {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }

    /* one upgrade request per token and port, built once (Socket.IO sends the
     * token in its namespace connect instead of a header) */
    int ntok = g_ntokens ? g_ntokens : 1;
    const char *path = g_socketio ? "/socket.io/?EIO=4&transport=websocket" : "/";
    g_req = xmalloc(sizeof(char *) * (size_t)(ntok * g_nports));
    g_req_len = xmalloc(sizeof(size_t) * (size_t)(ntok * g_nports));
    for (int t = 0; t < ntok; t++) {
        for (int p = 0; p < g_nports; p++) {
            char *r = xmalloc(2048);
            int n = snprintf(r, 2048,
                             "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             "Sec-WebSocket-Version: 13\r\n",
                             path, g_host, g_ports[p]);
            if (g_ntokens && !g_socketio)
                n += snprintf(r + n, 2048 - (size_t)n, "Authorization: Bearer %s\r\n", g_tokens[t]);
            if (g_subproto) n += snprintf(r + n, 2048 - (size_t)n, "Sec-WebSocket-Protocol: wshub.v1\r\n");
            n += snprintf(r + n, 2048 - (size_t)n, "\r\n");
            g_req[t * g_nports + p] = r;
            g_req_len[t * g_nports + p] = (size_t)n;
        }
    }
    if (!g_ntokens) {
        g_tokens[0] = "";
        g_ntokens = 1;
    }

    uint8_t *msg = xmalloc((size_t)g_size + 1);
    for (int i = 0; i < g_size; i++) msg[i] = (uint8_t)('a' + i % 26);
    g_echo_frame = xmalloc((size_t)g_size + 16);
    g_echo_len = build_frame(g_echo_frame, 0x1, msg, (size_t)g_size);

    g_hist = calloc(HIST_US, sizeof *g_hist);
    g_sent_at = calloc(RING, sizeof *g_sent_at);
    g_delivered = calloc(RING, sizeof *g_delivered);
    g_nc = g_sc == SC_FANOUT ? g_conns + 1 : g_conns;
    g_c = calloc((size_t)g_nc, sizeof *g_c);
    if (!g_hist || !g_sent_at || !g_delivered || !g_c) die("out of memory");
    if (g_sc == SC_ECHO)
        for (int i = 0; i < g_nc; i++) g_c[i].ring = xmalloc(sizeof(uint64_t) * (size_t)g_inflight);
    if (g_sc == SC_HANDSHAKES && g_concurrency < g_nc) g_concurrency = g_nc;
    g_ep = epoll_create1(0);
    if (g_ep < 0) die("epoll_create1");
    return run();
}
