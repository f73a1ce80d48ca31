/* proto-epoll: a minimal TCP proxy shaped like makler-balancer's forwarding threads, for comparing
 * system interfaces (issue 22): 2 threads, each with its own SO_REUSEPORT listener and one
 * edge-triggered epoll set; bytes move with recv/send through one scratch buffer per thread, and
 * only what a destination cannot take waits in a per-direction buffer (reading that source stops
 * until it drains). A read shorter than the buffer is taken to have emptied the socket (a new
 * arrival raises a new edge) unless the peer has shut its side (EPOLLRDHUP). End of stream passes
 * on as shutdown(SHUT_WR); a connection closes when both directions have ended, or on an error.
 * Usage: proto-epoll LIFETIME_S BACKEND_IP:PORT... */
#include "common.h"
#include <fcntl.h>
#include <sys/epoll.h>

#define SCRATCH (64 * 1024)
#define MAX_CONNS 16384
#define ACCEPT_BUDGET 64

struct dir {                  /* one direction: read from fd[s], written to fd[1 - s] */
	char *buf;            /* what the destination could not take yet */
	int len, off;
	unsigned char eof, shut, rdhup;
};

struct conn {
	int fd[2];            /* client, backend */
	struct dir d[2];      /* client to backend, backend to client */
	unsigned char wrote[2], nodelay[2];
	unsigned char dead;
};

struct worker {
	int ep, lfd;
	unsigned rr;
	int accept_more;
	char scratch[SCRATCH];
	struct conn conns[MAX_CONNS];
	int free_list[MAX_CONNS], nfree;
	int dead_list[MAX_CONNS], ndead;
};

static void kill_conn(struct worker *w, int i) {
	struct conn *c = &w->conns[i];
	if (c->dead) return;
	c->dead = 1;
	close(c->fd[0]);
	close(c->fd[1]);
	w->dead_list[w->ndead++] = i; /* freed after this batch: later events may still name it */
}

/* Moves bytes from fd[s] to fd[1 - s]. Returns -1 to close the connection. */
static int pump(struct worker *w, struct conn *c, int s) {
	struct dir *d = &c->d[s];
	int src = c->fd[s], dst = c->fd[1 - s];
	if (d->len > d->off) {
		ssize_t m = send(dst, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
		if (m < 0) return errno == EAGAIN ? 0 : -1;
		d->off += m;
		if (d->off < d->len) return 0;
		d->off = d->len = 0;
	}
	while (!d->eof) {
		ssize_t n = recv(src, w->scratch, SCRATCH, 0);
		if (n > 0) {
			before_write(dst, &c->wrote[1 - s], &c->nodelay[1 - s]);
			ssize_t m = send(dst, w->scratch, n, MSG_NOSIGNAL);
			if (m < 0) {
				if (errno != EAGAIN) return -1;
				m = 0;
			}
			if (m < n) {
				if (!d->buf) d->buf = malloc(SCRATCH);
				memcpy(d->buf, w->scratch + m, n - m);
				d->len = n - m;
				d->off = 0;
				return 0;
			}
			if (n < SCRATCH && !d->rdhup) return 0;
		} else if (n == 0) {
			d->eof = 1;
		} else {
			return errno == EAGAIN ? 0 : -1;
		}
	}
	if (!d->shut) {
		struct dir *o = &c->d[1 - s];
		if (o->eof && o->len == o->off) return -1; /* both ended: closing tells the peers */
		shutdown(dst, SHUT_WR);
		d->shut = 1;
	}
	return 0;
}

static void accept_some(struct worker *w) {
	w->accept_more = 1;
	for (int k = 0; k < ACCEPT_BUDGET && w->nfree > 0; k++) {
		int cfd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			w->accept_more = 0;
			return;
		}
		int bfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		struct sockaddr_in *b = &backends[w->rr++ % nbackends];
		if (bfd < 0 || (connect(bfd, (struct sockaddr *)b, sizeof *b) < 0 && errno != EINPROGRESS)) {
			close(cfd);
			if (bfd >= 0) close(bfd);
			continue;
		}
		int i = w->free_list[--w->nfree];
		struct conn *c = &w->conns[i];
		char *keep[2] = {c->d[0].buf, c->d[1].buf};
		memset(c, 0, sizeof *c);
		c->d[0].buf = keep[0];
		c->d[1].buf = keep[1];
		c->fd[0] = cfd;
		c->fd[1] = bfd;
		c->nodelay[0] = 1; /* from the listener */
		for (int s = 0; s < 2; s++) {
			struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
						 .data.u64 = (uint64_t)i << 1 | s};
			epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd[s], &ev);
		}
	}
}

static void *thread_main(void *arg) {
	long t = (long)arg;
	struct worker *w = calloc(1, sizeof *w);
	struct epoll_event evs[256];
	w->lfd = listeners[t];
	w->rr = t;
	w->ep = epoll_create1(EPOLL_CLOEXEC);
	for (int i = MAX_CONNS - 1; i >= 0; i--) w->free_list[w->nfree++] = i;
	struct epoll_event lev = {.events = EPOLLIN | EPOLLET, .data.u64 = UINT64_MAX};
	epoll_ctl(w->ep, EPOLL_CTL_ADD, w->lfd, &lev);
	for (;;) {
		int n = epoll_wait(w->ep, evs, 256, -1);
		if (n < 0 && errno != EINTR) die("epoll_wait");
		for (int k = 0; k < n; k++) {
			uint64_t u = evs[k].data.u64;
			uint32_t e = evs[k].events;
			if (u == UINT64_MAX) {
				accept_some(w);
				continue;
			}
			int i = u >> 1, s = u & 1;
			struct conn *c = &w->conns[i];
			if (c->dead) continue;
			if (e & EPOLLERR) {
				kill_conn(w, i);
				continue;
			}
			if (e & EPOLLRDHUP) c->d[s].rdhup = 1;
			/* writable: what waited for fd[s] (direction 1 - s) goes first, then reading resumes */
			if ((e & EPOLLOUT) && c->d[1 - s].len > c->d[1 - s].off && pump(w, c, 1 - s) < 0) {
				kill_conn(w, i);
				continue;
			}
			if ((e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) && pump(w, c, s) < 0) kill_conn(w, i);
		}
		/* The budget ran out before the listener was drained: no new edge will say so. */
		if (w->accept_more) accept_some(w);
		for (int k = 0; k < w->ndead; k++) w->free_list[w->nfree++] = w->dead_list[k];
		w->ndead = 0;
	}
	return NULL;
}

int main(int argc, char **argv) {
	setup(argc, argv);
	for (int t = 0; t < THREADS; t++) {
		int fl = fcntl(listeners[t], F_GETFL);
		fcntl(listeners[t], F_SETFL, fl | O_NONBLOCK);
	}
	run_threads();
	return 0;
}
