// The WebSocket floor: the least a WebSocket fan-out server can do, measured the way the
// servers are. loopback_floor.c reads its sockets with a C epoll loop, while Switchboard
// and Nchan are read by LoadGen (Swift NIO, one event loop for all subscribers), so their
// p99 carries LoadGen's reading cost and that floor's does not. This is a server LoadGen
// measures exactly like Nchan: the same upgrade, the same `POST /pub/<id>` publisher, the
// same reader, so the servers' p99 can be read against it like with like.
//
// THREADS event loops (one epoll and one SO_REUSEPORT listener each, like Switchboard's
// loops and Nchan's workers) on 127.0.0.1:PORT. `GET /sub/<any>` with `Upgrade: websocket`
// → 101 and a subscriber (topics are ignored: every subscriber gets every message).
// `POST /pub/<any>` (Content-Length, keep-alive) → 200 and the body as one unmasked text
// frame to every subscriber: the publishing loop builds the frame once, the other loops get
// it through a locked queue and an eventfd (reference counted). At the end of each round of
// events a loop writes what is pending to each of its subscribers with one write(): one
// frame at a moderate rate, up to BATCH frames back to back when events queue up faster
// than a round (no timer, nothing waits for a batch; BATCH 1 writes every frame on its own,
// at once). What the kernel does not take waits in the connection's outbox and goes out on
// EPOLLOUT, in order (a subscriber whose outbox passes 16 MiB is closed, never skipped).
// `GET /healthz` → 200, anything else → 404. Client frames are unmasked and skipped; pings
// get pongs, a close gets a close. No framework, no library beyond libc; prints nothing
// but errors.
//
//   gcc -O2 -Wall -Wextra -pthread -o /tmp/ws_floor Benchmarks/Floor/ws_floor.c
//   /tmp/ws_floor 18090 2        # PORT THREADS(1-8) [BATCH(1-256), default 64]
//   python3 Benchmarks/bench.py a --scale 0.1 --rate 50 --servers switchboard,nchan,wsfloor
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum { MAX_THREADS = 8, IN_START = 512, HEAD_MAX = 16384, BODY_MAX = 1 << 20, OUT_MAX = 16 << 20, EVENTS = 256,
       MAX_BATCH = 256, BATCH_BYTES = 256 << 10 };
enum { HTTP, SUBSCRIBER, CLOSING, CLOSED };

// --- SHA-1 (FIPS 180-4) and base64, for Sec-WebSocket-Accept (RFC 6455 §4.2.2) ---
static uint32_t rol(uint32_t x, int n) { return x << n | x >> (32 - n); }

static void sha1(const unsigned char *data, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t blocks = (len + 9 + 63) / 64;  // the message, 0x80, the 64-bit bit length
    for (size_t b = 0; b < blocks; b++) {
        unsigned char block[64];
        for (size_t i = 0; i < 64; i++) {
            size_t at = b * 64 + i;
            block[i] = at < len ? data[at] : at == len ? 0x80 : 0;
        }
        if (b == blocks - 1)
            for (int i = 0; i < 8; i++) block[63 - i] = (unsigned char)((uint64_t)len * 8 >> 8 * i);
        uint32_t w[80], v[5];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 | (uint32_t)block[4 * i + 2] << 8 | block[4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        memcpy(v, h, sizeof v);
        for (int i = 0; i < 80; i++) {
            uint32_t f = i < 20 ? (v[1] & v[2]) | (~v[1] & v[3])
                       : i < 40 ? v[1] ^ v[2] ^ v[3]
                       : i < 60 ? (v[1] & v[2]) | (v[1] & v[3]) | (v[2] & v[3])
                                : v[1] ^ v[2] ^ v[3];
            uint32_t k = i < 20 ? 0x5A827999 : i < 40 ? 0x6ED9EBA1 : i < 60 ? 0x8F1BBCDC : 0xCA62C1D6;
            uint32_t t = rol(v[0], 5) + f + v[4] + k + w[i];
            v[4] = v[3], v[3] = v[2], v[2] = rol(v[1], 30), v[1] = v[0], v[0] = t;
        }
        for (int i = 0; i < 5; i++) h[i] += v[i];
    }
    for (int i = 0; i < 20; i++) out[i] = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static void accept_key(const char *key, size_t len, char out[29]) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char joined[128 + sizeof guid], digest[21] = {0};
    memcpy(joined, key, len);
    memcpy(joined + len, guid, sizeof guid - 1);
    sha1(joined, len + sizeof guid - 1, digest);
    for (int i = 0, o = 0; i < 21; i += 3, o += 4) {  // 20 bytes → 27 characters and one '='
        uint32_t n = (uint32_t)digest[i] << 16 | (uint32_t)digest[i + 1] << 8 | (i + 2 < 21 ? digest[i + 2] : 0);
        out[o] = abc[n >> 18 & 63], out[o + 1] = abc[n >> 12 & 63], out[o + 2] = abc[n >> 6 & 63], out[o + 3] = abc[n & 63];
    }
    out[27] = '=', out[28] = 0;
}

// --- connections, loops, messages ---
typedef struct message {  // one frame for every loop; the last loop to fan it out frees it
    atomic_int refs;
    struct message *next[MAX_THREADS];  // its place in each loop's queue
    size_t len;
    unsigned char data[];
} message;

typedef struct conn {
    int fd, state, index;  // index: place in its loop's subscriber array
    bool out_armed;        // EPOLLOUT requested
    unsigned char *in, *out;
    size_t in_len, in_cap, skip;  // skip: payload bytes of a client data frame still unread
    size_t out_off, out_len, out_cap;
    struct conn *next_dead;
} conn;

typedef struct loop {
    int epoll, listener, wake;
    conn **subs, *dead;  // dead: closed during this batch of events, freed after it
    int n_subs, cap_subs;
    pthread_mutex_t lock;
    message *head, *tail;                 // from the other loops, under lock
    message *pending[MAX_BATCH];          // to send at the end of this batch of events
    int n_pending;
    size_t pending_bytes, round_cap;
    unsigned char *round;                 // the pending frames back to back
} loop;

static loop loops[MAX_THREADS];
static int threads, batch = 64;
static char listener_tag, wake_tag;

static void set_events(loop *l, conn *c, uint32_t events) {
    struct epoll_event event = {.events = events, .data.ptr = c};
    epoll_ctl(l->epoll, EPOLL_CTL_MOD, c->fd, &event);
}

static void unsubscribe(loop *l, conn *c) {
    if (c->state != SUBSCRIBER) return;
    conn *last = l->subs[--l->n_subs];
    l->subs[c->index] = last, last->index = c->index;
}

static void close_conn(loop *l, conn *c) {
    if (c->state == CLOSED) return;
    unsubscribe(l, c);
    close(c->fd);
    c->state = CLOSED;
    c->next_dead = l->dead, l->dead = c;
}

// Stop taking input and messages; close once the outbox is out.
static void finish(loop *l, conn *c) {
    if (c->state == CLOSED) return;
    unsubscribe(l, c);
    c->state = CLOSING;
    if (c->out_len == 0) { close_conn(l, c); return; }
    set_events(l, c, EPOLLOUT);
}

// Keeps bytes the kernel did not take, after whatever is waiting already (order kept).
static void keep(loop *l, conn *c, const unsigned char *bytes, size_t n) {
    if (c->out_len + n > OUT_MAX) { close_conn(l, c); return; }  // a reader this far behind is cut off, not skipped
    if (c->out_off + c->out_len + n > c->out_cap) {
        if (c->out_len) memmove(c->out, c->out + c->out_off, c->out_len);
        c->out_off = 0;
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 4096;
            while (cap < c->out_len + n) cap *= 2;
            unsigned char *grown = realloc(c->out, cap);
            if (!grown) { close_conn(l, c); return; }
            c->out = grown, c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_off + c->out_len, bytes, n);
    c->out_len += n;
    if (!c->out_armed && c->state != CLOSING) set_events(l, c, EPOLLIN | EPOLLOUT), c->out_armed = true;
}

static void send_bytes(loop *l, conn *c, const void *bytes, size_t n) {
    if (c->state == CLOSED) return;
    if (c->out_len) { keep(l, c, bytes, n); return; }
    ssize_t wrote = write(c->fd, bytes, n);
    if (wrote == (ssize_t)n) return;
    if (wrote < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { close_conn(l, c); return; }
        wrote = 0;
    }
    keep(l, c, (const unsigned char *)bytes + wrote, n - (size_t)wrote);
}

static void flush(loop *l, conn *c) {
    while (c->out_len) {
        ssize_t wrote = write(c->fd, c->out + c->out_off, c->out_len);
        if (wrote < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            close_conn(l, c);
            return;
        }
        c->out_off += (size_t)wrote, c->out_len -= (size_t)wrote;
    }
    c->out_off = 0;
    if (c->out_cap > 65536) free(c->out), c->out = NULL, c->out_cap = 0;  // a drained backlog gives its memory back
    if (c->state == CLOSING) { close_conn(l, c); return; }
    set_events(l, c, EPOLLIN), c->out_armed = false;
}

// Every frame pending on this loop to each of its subscribers: one write() per subscriber
// (the frames back to back when several are pending; the outbox keeps what the kernel
// does not take, in order).
static void fan_out(loop *l) {
    if (!l->n_pending) return;
    const unsigned char *bytes = l->pending[0]->data;
    size_t len = l->pending[0]->len;
    if (l->n_pending > 1) {
        if (l->pending_bytes > l->round_cap) {
            unsigned char *grown = realloc(l->round, l->pending_bytes);
            if (!grown) { perror("malloc"); exit(1); }
            l->round = grown, l->round_cap = l->pending_bytes;
        }
        len = 0;
        for (int p = 0; p < l->n_pending; p++) memcpy(l->round + len, l->pending[p]->data, l->pending[p]->len), len += l->pending[p]->len;
        bytes = l->round;
    }
    for (int i = 0; i < l->n_subs;) {
        conn *c = l->subs[i];
        send_bytes(l, c, bytes, len);
        if (c->state != CLOSED) i++;  // closed: the last subscriber moved to i, not yet sent
    }
    for (int p = 0; p < l->n_pending; p++)
        if (atomic_fetch_sub(&l->pending[p]->refs, 1) == 1) free(l->pending[p]);
    l->n_pending = 0, l->pending_bytes = 0;
}

static void add_pending(loop *l, message *m) {
    l->pending[l->n_pending++] = m;
    l->pending_bytes += m->len;
    if (l->n_pending >= batch || l->pending_bytes >= BATCH_BYTES) fan_out(l);
}

static void publish(loop *l, const unsigned char *body, size_t n) {
    message *m = malloc(sizeof *m + 10 + n);
    if (!m) { perror("malloc"); return; }
    size_t h = 0;
    m->data[h++] = 0x81;  // FIN, text
    if (n < 126) {
        m->data[h++] = (unsigned char)n;
    } else if (n <= 0xFFFF) {
        m->data[h++] = 126, m->data[h++] = (unsigned char)(n >> 8), m->data[h++] = (unsigned char)n;
    } else {
        m->data[h++] = 127;
        for (int i = 7; i >= 0; i--) m->data[h++] = (unsigned char)((uint64_t)n >> 8 * i);
    }
    memcpy(m->data + h, body, n);
    m->len = h + n;
    atomic_init(&m->refs, threads);
    for (int t = 0; t < threads; t++) {
        loop *other = &loops[t];
        if (other == l) continue;
        m->next[t] = NULL;
        pthread_mutex_lock(&other->lock);
        bool was_empty = other->head == NULL;
        if (was_empty) other->head = m; else other->tail->next[t] = m;
        other->tail = m;
        pthread_mutex_unlock(&other->lock);
        uint64_t one = 1;
        if (was_empty && write(other->wake, &one, sizeof one) < 0) perror("eventfd");
    }
    add_pending(l, m);
}

static void take_queue(loop *l) {
    uint64_t count;
    if (read(l->wake, &count, sizeof count) < 0 && errno != EAGAIN) perror("eventfd");
    pthread_mutex_lock(&l->lock);
    message *m = l->head;
    l->head = l->tail = NULL;
    pthread_mutex_unlock(&l->lock);
    int self = (int)(l - loops);
    while (m) {
        message *next = m->next[self];
        add_pending(l, m);
        m = next;
    }
}

static void reply(loop *l, conn *c, const char *status, const char *body) {
    char head[256];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %s\r\nContent-Length: %zu\r\n\r\n%s", status, strlen(body), body);
    send_bytes(l, c, head, (size_t)n);
}

static bool starts(const char *s, size_t len, const char *prefix) {
    size_t n = strlen(prefix);
    return len >= n && strncasecmp(s, prefix, n) == 0;
}

// Client frames (masked): pings answered, a close answered and the socket closed, data skipped.
static size_t frames(loop *l, conn *c, size_t pos) {
    while (c->state == SUBSCRIBER) {
        if (c->skip) {
            size_t k = c->in_len - pos < c->skip ? c->in_len - pos : c->skip;
            pos += k, c->skip -= k;
            if (c->skip) break;
            continue;
        }
        unsigned char *f = c->in + pos;
        size_t avail = c->in_len - pos;
        if (avail < 2) break;
        int opcode = f[0] & 15, len7 = f[1] & 127;
        size_t head = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4, len = (size_t)len7;
        if (!(f[1] & 0x80) || ((opcode & 8) && (len7 > 125 || !(f[0] & 0x80)))) {  // unmasked, or a bad control frame
            static const unsigned char protocol_error[] = {0x88, 2, 0x03, 0xEA};   // close 1002
            send_bytes(l, c, protocol_error, sizeof protocol_error);
            finish(l, c);
            break;
        }
        if (avail < head) break;
        if (len7 == 126) len = (size_t)f[2] << 8 | f[3];
        if (len7 == 127) { len = 0; for (int i = 2; i < 10; i++) len = len << 8 | f[i]; }
        if (!(opcode & 8)) {  // text, binary, continuation: nothing to do with them
            pos += head, c->skip = len;
            continue;
        }
        if (avail < head + len) break;
        unsigned char reply_frame[2 + 125];
        reply_frame[0] = (unsigned char)(0x80 | (opcode == 9 ? 0xA : opcode)), reply_frame[1] = (unsigned char)len;
        for (size_t i = 0; i < len; i++) reply_frame[2 + i] = f[head + i] ^ f[head - 4 + (i & 3)];
        pos += head + len;
        if (opcode == 9) {
            send_bytes(l, c, reply_frame, 2 + len);
        } else if (opcode == 8) {  // echo the status code (if any), then close
            reply_frame[1] = len >= 2 ? 2 : 0;
            send_bytes(l, c, reply_frame, 2 + (size_t)reply_frame[1]);
            finish(l, c);
        }
    }
    return pos;
}

// HTTP/1.1 requests, one after another on a keep-alive connection.
static size_t requests(loop *l, conn *c) {
    size_t pos = 0;
    while (c->state == HTTP) {
        char *start = (char *)c->in + pos, *end = memmem(start, c->in_len - pos, "\r\n\r\n", 4);
        if (!end) {
            if (c->in_len - pos > HEAD_MAX) reply(l, c, "431 Request Header Fields Too Large", ""), finish(l, c);
            break;
        }
        size_t head_len = (size_t)(end - start) + 4, body_len = 0, key_len = 0;
        const char *key = NULL;
        bool upgrade = false, chunked = false;
        char *line_end = memmem(start, head_len, "\r\n", 2);
        for (char *line = line_end + 2; line < end; line = line_end + 2) {
            line_end = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
            size_t len = (size_t)(line_end - line);
            char *colon = memchr(line, ':', len);
            if (!colon) continue;
            char *value = colon + 1;
            while (value < line_end && (*value == ' ' || *value == '\t')) value++;
            size_t value_len = (size_t)(line_end - value);
            while (value_len && (value[value_len - 1] == ' ' || value[value_len - 1] == '\t')) value_len--;
            if (starts(line, len, "content-length:")) body_len = strtoul(value, NULL, 10);
            else if (starts(line, len, "transfer-encoding:")) chunked = true;
            else if (starts(line, len, "upgrade:")) upgrade = starts(value, value_len, "websocket");
            else if (starts(line, len, "sec-websocket-key:") && value_len <= 128) key = value, key_len = value_len;
        }
        if (chunked || body_len > BODY_MAX) {
            reply(l, c, chunked ? "501 Not Implemented" : "413 Content Too Large", "");
            finish(l, c);
            break;
        }
        if (c->in_len - pos < head_len + body_len) {  // wait for the body
            if (pos + head_len + body_len > c->in_cap) {
                unsigned char *grown = realloc(c->in, pos + head_len + body_len);
                if (!grown) { close_conn(l, c); break; }
                c->in = grown, c->in_cap = pos + head_len + body_len;
            }
            break;
        }
        size_t line_len = (size_t)((char *)memchr(start, '\r', head_len) - start);
        if (starts(start, line_len, "GET /sub/") && upgrade && key) {
            char accept[29], response[160];
            accept_key(key, key_len, accept);
            int n = snprintf(response, sizeof response,
                             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
            send_bytes(l, c, response, (size_t)n);
            if (c->state != HTTP) break;
            if (l->n_subs == l->cap_subs) {
                int cap = l->cap_subs ? l->cap_subs * 2 : 1024;
                conn **grown = realloc(l->subs, (size_t)cap * sizeof *grown);
                if (!grown) { close_conn(l, c); break; }
                l->subs = grown, l->cap_subs = cap;
            }
            c->state = SUBSCRIBER, c->index = l->n_subs, l->subs[l->n_subs++] = c;
            pos += head_len + body_len;
            return frames(l, c, pos);
        } else if (starts(start, line_len, "POST /pub/")) {
            publish(l, c->in + pos + head_len, body_len);
            reply(l, c, "200 OK", "");
        } else if (starts(start, line_len, "GET /healthz ")) {
            reply(l, c, "200 OK", "ok\n");
        } else {
            reply(l, c, "404 Not Found", "");
        }
        pos += head_len + body_len;
    }
    return pos;
}

static void readable(loop *l, conn *c) {
    if (c->in_len == c->in_cap) {  // only an HTTP head that has not ended yet gets here
        unsigned char *grown = c->in_cap < HEAD_MAX * 2 ? realloc(c->in, c->in_cap * 2) : NULL;
        if (!grown) { close_conn(l, c); return; }
        c->in = grown, c->in_cap *= 2;
    }
    ssize_t got = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (got <= 0) {
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        close_conn(l, c);  // EOF, ECONNRESET
        return;
    }
    c->in_len += (size_t)got;
    size_t used = c->state == HTTP ? requests(l, c) : frames(l, c, 0);
    if (c->state == CLOSED) return;
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
}

static void accept_all(loop *l) {
    static atomic_bool reported;
    for (;;) {
        int fd = accept4(l->listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK && !atomic_exchange(&reported, true)) perror("accept");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        if (c) c->in = malloc(IN_START), c->in_cap = IN_START;
        if (!c || !c->in) { perror("malloc"); close(fd); if (c) free(c); continue; }
        c->fd = fd, c->state = HTTP;
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(l->epoll, EPOLL_CTL_ADD, fd, &event)) { perror("epoll_ctl"); close(fd); free(c->in); free(c); }
    }
}

static void *run(void *arg) {
    loop *l = arg;
    struct epoll_event events[EVENTS];
    for (;;) {
        int ready = epoll_wait(l->epoll, events, EVENTS, -1);
        if (ready < 0 && errno != EINTR) { perror("epoll_wait"); exit(1); }
        for (int e = 0; e < ready; e++) {
            void *tag = events[e].data.ptr;
            uint32_t what = events[e].events;
            if (tag == &listener_tag) { accept_all(l); continue; }
            if (tag == &wake_tag) { take_queue(l); continue; }
            conn *c = tag;
            if (c->state == CLOSED) continue;  // closed earlier in this batch
            if (what & EPOLLOUT) flush(l, c);
            if (c->state == CLOSING && (what & (EPOLLERR | EPOLLHUP))) close_conn(l, c);
            else if (c->state != CLOSED && c->state != CLOSING && (what & (EPOLLIN | EPOLLERR | EPOLLHUP))) readable(l, c);
        }
        fan_out(l);  // what this batch of events published or received from the other loops
        while (l->dead) {
            conn *c = l->dead;
            l->dead = c->next_dead;
            free(c->in), free(c->out), free(c);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    threads = argc > 2 ? atoi(argv[2]) : 2;
    batch = argc > 3 ? atoi(argv[3]) : batch;
    if (argc < 3 || argc > 4 || port < 1 || port > 65535 || threads < 1 || threads > MAX_THREADS || batch < 1 || batch > MAX_BATCH) {
        fprintf(stderr, "usage: ws_floor PORT THREADS(1-%d) [BATCH(1-%d), default 64]\n", MAX_THREADS, MAX_BATCH);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0) files.rlim_cur = files.rlim_max, setrlimit(RLIMIT_NOFILE, &files);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int t = 0; t < threads; t++) {  // every listener bound before any loop accepts
        loop *l = &loops[t];
        int one = 1;
        l->listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (l->listener < 0 || setsockopt(l->listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
            setsockopt(l->listener, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
            bind(l->listener, (struct sockaddr *)&address, sizeof address) || listen(l->listener, 4096)) {
            perror("listen");
            return 1;
        }
        l->epoll = epoll_create1(EPOLL_CLOEXEC);
        l->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        pthread_mutex_init(&l->lock, NULL);
        struct epoll_event listen_event = {.events = EPOLLIN, .data.ptr = &listener_tag};
        struct epoll_event wake_event = {.events = EPOLLIN, .data.ptr = &wake_tag};
        if (l->epoll < 0 || l->wake < 0 || epoll_ctl(l->epoll, EPOLL_CTL_ADD, l->listener, &listen_event) ||
            epoll_ctl(l->epoll, EPOLL_CTL_ADD, l->wake, &wake_event)) {
            perror("epoll");
            return 1;
        }
    }
    pthread_t others[MAX_THREADS];
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&others[t], NULL, run, &loops[t])) { perror("pthread_create"); return 1; }
    }
    run(&loops[0]);
    return 0;
}
