// The floor under any server's fan-out latency on this machine: W writer threads write
// one 200-byte message to each of N loopback TCP connections (TCP_NODELAY, like a
// WebSocket server), one reader thread reads them all with epoll (like a one-threaded
// load generator). No framing, no framework, no allocation: what is left is the kernel's
// cost of a loopback send and receive. Per round it records when each message arrived,
// relative to the round's first write; it prints the medians over the rounds of the
// per-round p50, p99 and last arrival, as one JSON line.
//
//   gcc -O2 -pthread -o /tmp/loopback_floor Benchmarks/Floor/loopback_floor.c
//   /tmp/loopback_floor 1000 2 100      # connections, writer threads, rounds (50 per s)
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { SIZE = 200, MAX_ROUNDS = 1000 };
static int n, writers, rounds;
static int *sendfds, *recvfds;
static double *arrivals;  // per message of the current round, ms after the round's start
static _Atomic long long round_start_ns;
static _Atomic int round_done = -1;
static pthread_barrier_t start_barrier;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void *writer(void *arg) {
    long index = (long)arg;
    char message[SIZE];
    memset(message, 'x', SIZE);
    for (int r = 0; r < rounds; r++) {
        pthread_barrier_wait(&start_barrier);
        for (int i = (int)index; i < n; i += writers) {
            if (write(sendfds[i], message, SIZE) != SIZE) { perror("write"); exit(1); }
        }
        pthread_barrier_wait(&start_barrier);
    }
    return NULL;
}

static void *reader(void *arg) {
    (void)arg;
    int epoll = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        struct epoll_event event = {.events = EPOLLIN, .data.u32 = (unsigned)i};
        epoll_ctl(epoll, EPOLL_CTL_ADD, recvfds[i], &event);
    }
    struct epoll_event events[256];
    char buffer[64 * 1024];
    long long received = 0;
    for (int r = 0; r < rounds; r++) {
        int got = 0;
        while (got < n) {
            int ready = epoll_wait(epoll, events, 256, 1000);
            for (int e = 0; e < ready; e++) {
                ssize_t bytes = read(recvfds[events[e].data.u32], buffer, sizeof buffer);
                if (bytes <= 0) continue;
                long long at = now_ns();
                received += bytes;
                for (long long m = (received - bytes) / SIZE; m < received / SIZE && got < n; m++) {
                    arrivals[got++] = (double)(at - atomic_load(&round_start_ns)) / 1e6;
                }
            }
        }
        atomic_store(&round_done, r);
    }
    return NULL;
}

int main(int argc, char **argv) {
    n = argc > 1 ? atoi(argv[1]) : 1000;
    writers = argc > 2 ? atoi(argv[2]) : 1;
    rounds = argc > 3 ? atoi(argv[3]) : 100;
    if (n < 1 || n > 9000 || writers < 1 || writers > 8 || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: loopback_floor CONNECTIONS(1-9000) WRITERS(1-8) ROUNDS(1-1000)\n");
        return 2;
    }
    sendfds = calloc(n, sizeof(int));
    recvfds = calloc(n, sizeof(int));
    arrivals = calloc(n, sizeof(double));
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t length = sizeof address;
    if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 4096) ||
        getsockname(listener, (struct sockaddr *)&address, &length)) { perror("listen"); return 1; }
    int one = 1;
    for (int i = 0; i < n; i++) {
        recvfds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(recvfds[i], (struct sockaddr *)&address, sizeof address)) { perror("connect"); return 1; }
        sendfds[i] = accept(listener, NULL, NULL);
        if (sendfds[i] < 0) { perror("accept"); return 1; }
        setsockopt(sendfds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    pthread_barrier_init(&start_barrier, NULL, (unsigned)writers + 1);
    pthread_t threads[9];
    for (long w = 0; w < writers; w++) pthread_create(&threads[w], NULL, writer, (void *)w);
    pthread_create(&threads[writers], NULL, reader, NULL);
    double *p50 = calloc(rounds, sizeof(double)), *p99 = calloc(rounds, sizeof(double)), *last = calloc(rounds, sizeof(double));
    double *sorted = calloc(n, sizeof(double));
    for (int r = 0; r < rounds; r++) {
        atomic_store(&round_start_ns, now_ns());
        pthread_barrier_wait(&start_barrier);  // writers go
        pthread_barrier_wait(&start_barrier);  // writers done
        while (atomic_load(&round_done) < r) usleep(100);
        memcpy(sorted, arrivals, n * sizeof(double));
        qsort(sorted, n, sizeof(double), compare);
        p50[r] = sorted[(n - 1) / 2];
        p99[r] = sorted[(int)((n - 1) * 0.99)];
        last[r] = sorted[n - 1];
        usleep(20000);  // 50 rounds per second
    }
    qsort(p50, rounds, sizeof(double), compare);
    qsort(p99, rounds, sizeof(double), compare);
    qsort(last, rounds, sizeof(double), compare);
    printf("{\"connections\":%d,\"writers\":%d,\"rounds\":%d,\"median_p50_ms\":%.2f,\"median_p99_ms\":%.2f,\"median_last_ms\":%.2f}\n",
           n, writers, rounds, p50[rounds / 2], p99[rounds / 2], last[rounds / 2]);
    return 0;
}
