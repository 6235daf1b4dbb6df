/* mcload HOST PORT TEST REQUESTS CLIENTS PIPELINE KEYSPACE VALUESIZE MGETKEYS TIMEOUT_S
 * TEST: set | get | mget.  Prints one line of key=value figures; exit 0 when
 * every request was answered, 2 on a timeout, 1 on a connection error. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { T_SET, T_GET, T_MGET };

typedef struct {
    int fd;
    char *out; size_t out_len, out_off, out_cap;
    char *in; size_t in_len, in_cap;
    long pending;      /* replies still expected for the current batch */
    int values_in_reply;
    int want_out;
} conn_t;

static int test, pipeline, mget_keys, value_size;
static long requests, keyspace, issued, answered, errors, values, misses;
static char *value;

static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t cap2 = *cap ? *cap : 4096;
    while (cap2 < need) cap2 *= 2;
    *buf = realloc(*buf, cap2);
    if (!*buf) { perror("realloc"); exit(1); }
    *cap = cap2;
}

static void append(conn_t *c, const char *s, size_t n) {
    reserve(&c->out, &c->out_cap, c->out_len + n);
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

static void add_request(conn_t *c) {
    char line[64 + 16 * 64];
    long n = issued++;
    int len = 0;
    if (test == T_SET) {
        len = snprintf(line, sizeof line, "set key:%07ld 0 0 %d\r\n", n % keyspace, value_size);
        append(c, line, len);
        append(c, value, value_size);
        append(c, "\r\n", 2);
    } else if (test == T_GET) {
        len = snprintf(line, sizeof line, "get key:%07ld\r\n", n % keyspace);
        append(c, line, len);
    } else {
        len = snprintf(line, sizeof line, "get");
        for (int i = 0; i < mget_keys; i++)
            len += snprintf(line + len, sizeof line - len, " key:%07ld",
                            (n * mget_keys + i) % keyspace);
        len += snprintf(line + len, sizeof line - len, "\r\n");
        append(c, line, len);
    }
}

/* Parse complete replies from c->in; returns how many finished. */
static long parse(conn_t *c) {
    size_t pos = 0; long done = 0;
    for (;;) {
        char *start = c->in + pos;
        char *eol = memmem(start, c->in_len - pos, "\r\n", 2);
        if (!eol) break;
        size_t line_len = eol - start;
        if (line_len >= 6 && memcmp(start, "VALUE ", 6) == 0) {
            /* VALUE <key> <flags> <bytes> [<cas>] */
            char tmp[256]; size_t n = line_len < 255 ? line_len : 255;
            memcpy(tmp, start, n); tmp[n] = 0;
            char key[251]; unsigned flags; long bytes;
            if (sscanf(tmp, "VALUE %250s %u %ld", key, &flags, &bytes) != 3 || bytes < 0) {
                fprintf(stderr, "bad VALUE line: %s\n", tmp); exit(1);
            }
            size_t need = line_len + 2 + (size_t)bytes + 2;
            if (c->in_len - pos < need) break;  /* data block not complete yet */
            pos += need; c->values_in_reply++; values++;
            continue;
        }
        pos += line_len + 2;
        if (line_len == 3 && memcmp(start, "END", 3) == 0) {
            if (c->values_in_reply == 0) misses++;
        } else if (!(line_len == 6 && memcmp(start, "STORED", 6) == 0)) {
            if (errors++ < 3) fprintf(stderr, "error reply: %.*s\n", (int)line_len, start);
        }
        c->values_in_reply = 0;
        done++;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
    return done;
}

static int flush_out(conn_t *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            perror("write"); exit(1);
        }
        c->out_off += w;
    }
    c->out_len = c->out_off = 0;
    return 1;
}

static void next_batch(conn_t *c) {
    long batch = 0;
    while (batch < pipeline && issued < requests) { add_request(c); batch++; }
    c->pending = batch;
}

static void set_interest(int ep, conn_t *c, int want_out) {
    if (c->want_out == want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want_out;
}

int main(int argc, char **argv) {
    if (argc != 11) { fprintf(stderr, "usage: see source\n"); return 1; }
    const char *host = argv[1]; int port = atoi(argv[2]);
    test = !strcmp(argv[3], "set") ? T_SET : !strcmp(argv[3], "get") ? T_GET : T_MGET;
    requests = atol(argv[4]); int clients = atoi(argv[5]); pipeline = atoi(argv[6]);
    keyspace = atol(argv[7]); value_size = atoi(argv[8]); mget_keys = atoi(argv[9]);
    double timeout = atof(argv[10]);
    if (mget_keys > 16 || keyspace < 1 || clients < 1 || pipeline < 1) return 1;
    value = malloc(value_size + 1); memset(value, 'x', value_size);

    conn_t *conns = calloc(clients, sizeof *conns);
    int ep = epoll_create1(0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    for (int i = 0; i < clients; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            perror("connect"); return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    double t0 = now(), deadline = t0 + timeout;
    for (int i = 0; i < clients; i++) {
        next_batch(&conns[i]);
        if (!flush_out(&conns[i])) set_interest(ep, &conns[i], 1);
    }
    struct epoll_event events[256];
    int timed_out = 0;
    while (answered < requests) {
        if (now() > deadline) { timed_out = 1; break; }
        int n = epoll_wait(ep, events, 256, 1000);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            if (events[e].events & EPOLLOUT)
                if (flush_out(c)) set_interest(ep, c, 0);
            if (!(events[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            for (;;) {
                reserve(&c->in, &c->in_cap, c->in_len + 65536);
                size_t room = c->in_cap - c->in_len;
                ssize_t r = read(c->fd, c->in + c->in_len, room);
                if (r < 0) {
                    if (errno == EAGAIN || errno == EINTR) break;
                    perror("read"); return 1;
                }
                if (r == 0) { fprintf(stderr, "connection closed by the server\n"); return 1; }
                c->in_len += r;
                if ((size_t)r < room) break;  /* drained the socket for now */
            }
            long done = parse(c);
            answered += done; c->pending -= done;
            if (c->pending < 0) { fprintf(stderr, "more replies than requests\n"); return 1; }
            if (c->pending == 0 && issued < requests) {
                next_batch(c);
                if (!flush_out(c)) set_interest(ep, c, 1);
            }
        }
    }
    double secs = now() - t0;
    printf("answered=%ld errors=%ld values=%ld misses=%ld seconds=%.6f rps=%.1f\n",
           answered, errors, values, misses, secs, answered / secs);
    return timed_out ? 2 : 0;
}
