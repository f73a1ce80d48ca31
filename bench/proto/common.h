/* What the two prototype proxies share: their command line, the listeners, the backends, the
 * lifetime. Usage: proto-X LIFETIME_S BACKEND_IP:PORT...
 * Listens on 127.0.0.1 (an ephemeral port) with one SO_REUSEPORT listener per thread, prints
 * "listening tcp=127.0.0.1:PORT" and runs for LIFETIME_S seconds (SIGALRM ends the process).
 * Each thread hands its new connections to the backends in turn (connection-level round robin). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define THREADS 2
#define MAX_BACKENDS 16

static struct sockaddr_in backends[MAX_BACKENDS];
static int nbackends;
static int listeners[THREADS];

static void die(const char *what) {
	perror(what);
	exit(1);
}

static int listener(int port) {
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0) die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	/* Accepted sockets inherit it: the client side never waits for Nagle. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
	if (listen(fd, 4096) < 0) die("listen");
	return fd;
}

/* Parses the command line, binds the listeners, prints the listening line, arms the lifetime. */
static void setup(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: %s LIFETIME_S BACKEND_IP:PORT...\n", argv[0]);
		exit(2);
	}
	for (int i = 2; i < argc && nbackends < MAX_BACKENDS; i++) {
		char host[64];
		int port;
		if (sscanf(argv[i], "%63[^:]:%d", host, &port) != 2) die("backend");
		backends[nbackends].sin_family = AF_INET;
		backends[nbackends].sin_port = htons(port);
		if (inet_pton(AF_INET, host, &backends[nbackends].sin_addr) != 1) die("backend address");
		nbackends++;
	}
	listeners[0] = listener(0);
	struct sockaddr_in a;
	socklen_t len = sizeof a;
	getsockname(listeners[0], (struct sockaddr *)&a, &len);
	for (int t = 1; t < THREADS; t++) listeners[t] = listener(ntohs(a.sin_port));
	printf("listening tcp=127.0.0.1:%d\n", ntohs(a.sin_port));
	fflush(stdout);
	alarm(atoi(argv[1]));
}

/* Turns Nagle's algorithm off before any write to fd but the first (as makler-balancer does:
 * the first write leaves at once anyway, so a request per connection never needs the call). */
static void before_write(int fd, unsigned char *wrote, unsigned char *nodelay) {
	if (*wrote && !*nodelay) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		*nodelay = 1;
	}
	*wrote = 1;
}

static void *thread_main(void *arg);

static void run_threads(void) {
	pthread_t th[THREADS];
	for (long t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, thread_main, (void *)t);
	for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
}
