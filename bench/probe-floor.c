/* The kernel's floor for TCP health checks (issue 13): the least a prober can do per check,
 * with nothing of weir in it. Every 1/RATE s it opens a non-blocking socket to the next of
 * COUNT targets 127.2.x.y:PORT (the same addresses as bench/scale.py), waits for the connect
 * in one epoll set, reads SO_ERROR, sets a zero linger and closes (a reset, as weir does). Runs
 * for SECONDS and prints the CPU it used. One thread, no timers beyond epoll_wait's timeout.
 * Build and run: gcc -O2 -o /tmp/probe-floor bench/probe-floor.c && /tmp/probe-floor 10000 2000 47311 10
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s COUNT RATE PORT SECONDS\n", argv[0]);
        return 64;
    }
    int count = atoi(argv[1]), rate = atoi(argv[2]), port = atoi(argv[3]);
    double seconds = atof(argv[4]);
    int ep = epoll_create1(0);
    double start = now(), cpu0 = cpu(), next = start;
    long started = 0, connected = 0, failed = 0;
    struct epoll_event events[256];
    while (now() - start < seconds) {
        double t = now();
        while (next <= t) {
            int i = started % count;
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
            a.sin_addr.s_addr = htonl((127u << 24) | (2u << 16) | ((i / 250) << 8) | (i % 250 + 1));
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0) { perror("socket"); return 1; }
            if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
                failed++;
                close(fd);
            } else {
                struct epoll_event e = {.events = EPOLLOUT, .data.fd = fd};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
            }
            started++;
            next += 1.0 / rate;
        }
        /* Rounded up: a 0 ms timeout would spin; a check starts at most 1 ms late. */
        int timeout = (int)((next - now()) * 1000) + 1;
        int n = epoll_wait(ep, events, 256, timeout > 0 ? timeout : 0);
        for (int k = 0; k < n; k++) {
            int fd = events[k].data.fd, err = 0;
            socklen_t len = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err == 0) connected++; else failed++;
            struct linger l = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            close(fd);
        }
    }
    double used = cpu() - cpu0, wall = now() - start;
    printf("%ld checks (%ld connected, %ld failed) in %.1f s: %.1f%% of a core, %.1f us per check\n",
           started, connected, failed, wall, 100 * used / wall, 1e6 * used / started);
    return 0;
}
