/* proto-uring: proto-epoll's proxy on io_uring (liburing), for comparing system interfaces
 * (issue 22). 2 threads, each with its own SO_REUSEPORT listener and one ring: a multishot
 * accept; the backend connect on the ring; per socket one multishot recv into a provided-buffer
 * ring; the send goes out of the same buffer, which returns to the buffer ring when it has gone
 * (one send in flight per direction; what arrives meanwhile waits in order). One io_uring_enter
 * per turn submits everything and waits for a completion. When the buffers run out, a multishot
 * recv ends (-ENOBUFS) and is armed again once sends have returned buffers: that is the
 * backpressure. End of stream passes on as shutdown(SHUT_WR) (a system call: the ring's
 * shutdown always goes to a worker thread); a connection closes (on the ring) when both
 * directions have ended and nothing of it is in flight, or on an error after cancelling its
 * requests. Ring flags: URING=defer (default: SINGLE_ISSUER | DEFER_TASKRUN), coop
 * (COOP_TASKRUN | TASKRUN_FLAG), plain (none), sqpoll (SQPOLL: one kernel thread of this process,
 * shared by both rings, polls the submission queues; its CPU counts in the process's).
 * Usage: [URING=defer|coop|plain|sqpoll] proto-uring LIFETIME_S BACKEND_IP:PORT... */
#include "common.h"
#include <liburing.h>
#include <sys/mman.h>

#define NBUF 1024             /* provided buffers per thread (a power of two) */
#define QMAX 4                /* buffers one direction may hold before its recv is paused */
#define BUFSZ (16 * 1024)
#define BGID 1
#define MAX_CONNS 16384
#define ENTRIES 4096

static int first_ring_fd; /* thread 0's ring, for URING=sqpoll's shared polling thread */

enum { OP_ACCEPT = 1, OP_CONNECT, OP_RECV, OP_SEND, OP_CLOSE, OP_CANCEL };

struct dir {                  /* one direction: read from fd[s], written to fd[1 - s] */
	int head, tail;       /* queued buffers (ids), linked through worker.next */
	int off;              /* of the head buffer, already sent */
	int queued;           /* buffers in the queue */
	unsigned char eof, shut, sending, recv_armed, starved, paused;
};

struct conn {
	int fd[2];            /* client, backend */
	struct dir d[2];
	int inflight;         /* requests of this connection not completed */
	unsigned char wrote[2], nodelay[2], closing, used;
};

struct worker {
	struct io_uring ring;
	struct io_uring_buf_ring *br;
	char *bufs;
	int len[NBUF], next[NBUF];
	int lfd;
	unsigned rr;
	struct conn conns[MAX_CONNS];
	int free_list[MAX_CONNS], nfree;
	int starved[2 * MAX_CONNS], nstarved;
	unsigned returned;    /* buffers given back this turn */
};

static uint64_t ud(int i, int op, int s) { return (uint64_t)i << 8 | op << 1 | s; }

static struct io_uring_sqe *sqe(struct worker *w) {
	struct io_uring_sqe *q = io_uring_get_sqe(&w->ring);
	if (!q) { /* full: submit what is there (rare: ENTRIES is far above a turn's requests) */
		io_uring_submit(&w->ring);
		q = io_uring_get_sqe(&w->ring);
	}
	return q;
}

static void give_back(struct worker *w, int bid) {
	io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * BUFSZ, BUFSZ, bid, io_uring_buf_ring_mask(NBUF), 0);
	io_uring_buf_ring_advance(w->br, 1);
	w->returned++;
}

static void arm_recv(struct worker *w, int i, int s) {
	struct io_uring_sqe *q = sqe(w);
	io_uring_prep_recv_multishot(q, w->conns[i].fd[s], NULL, 0, 0);
	q->flags |= IOSQE_BUFFER_SELECT;
	q->buf_group = BGID;
	io_uring_sqe_set_data64(q, ud(i, OP_RECV, s));
	w->conns[i].inflight++;
	w->conns[i].d[s].recv_armed = 1;
}

static void send_head(struct worker *w, int i, int s) {
	struct conn *c = &w->conns[i];
	struct dir *d = &c->d[s];
	int bid = d->head, dst = c->fd[1 - s];
	before_write(dst, &c->wrote[1 - s], &c->nodelay[1 - s]);
	struct io_uring_sqe *q = sqe(w);
	io_uring_prep_send(q, dst, w->bufs + (size_t)bid * BUFSZ + d->off, w->len[bid] - d->off, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(q, ud(i, OP_SEND, s));
	c->inflight++;
	d->sending = 1;
}

static void close_fd(struct worker *w, int fd) {
	struct io_uring_sqe *q = sqe(w);
	io_uring_prep_close(q, fd);
	io_uring_sqe_set_data64(q, ud(0, OP_CLOSE, 0));
}

/* Frees the connection once nothing of it is in flight. */
static void maybe_free(struct worker *w, int i) {
	struct conn *c = &w->conns[i];
	if (!c->closing || c->inflight > 0) return;
	close_fd(w, c->fd[0]);
	close_fd(w, c->fd[1]);
	c->used = 0;
	w->free_list[w->nfree++] = i;
}

static void kill_conn(struct worker *w, int i) {
	struct conn *c = &w->conns[i];
	if (c->closing) return;
	c->closing = 1;
	for (int s = 0; s < 2; s++) {
		for (int b = c->d[s].head; b >= 0; b = w->next[b]) give_back(w, b);
		c->d[s].head = c->d[s].tail = -1;
		if (c->inflight > 0) {
			struct io_uring_sqe *q = sqe(w);
			io_uring_prep_cancel_fd(q, c->fd[s], IORING_ASYNC_CANCEL_ALL);
			io_uring_sqe_set_data64(q, ud(0, OP_CANCEL, 0));
		}
	}
	maybe_free(w, i);
}

/* Direction s has ended and everything of it has gone out. */
static void dir_done(struct worker *w, int i, int s) {
	struct conn *c = &w->conns[i];
	struct dir *o = &c->d[1 - s];
	if (c->d[s].shut) return;
	c->d[s].shut = 1;
	if (o->eof && o->head < 0 && !o->sending) {
		c->closing = 1; /* both ended: closing tells the peers */
		maybe_free(w, i);
		return;
	}
	shutdown(c->fd[1 - s], SHUT_WR);
}

static void on_recv(struct worker *w, int i, int s, int res, unsigned flags) {
	struct conn *c = &w->conns[i];
	struct dir *d = &c->d[s];
	if (!(flags & IORING_CQE_F_MORE)) {
		c->inflight--;
		d->recv_armed = 0;
	}
	if (flags & IORING_CQE_F_BUFFER) {
		int bid = flags >> IORING_CQE_BUFFER_SHIFT;
		if (c->closing || res <= 0) {
			give_back(w, bid);
		} else {
			w->len[bid] = res;
			w->next[bid] = -1;
			if (d->tail >= 0) w->next[d->tail] = bid;
			else d->head = bid, d->off = 0;
			d->tail = bid;
			d->queued++;
			if (!d->sending) send_head(w, i, s);
			/* The destination is slow: stop reading this source until the queue drains, so
			 * one direction cannot hold every buffer (the other would starve for good). */
			if (d->queued >= QMAX && d->recv_armed && !d->paused) {
				struct io_uring_sqe *q = sqe(w);
				io_uring_prep_cancel64(q, ud(i, OP_RECV, s), 0);
				io_uring_sqe_set_data64(q, ud(0, OP_CANCEL, 0));
				d->paused = 1;
			}
		}
	}
	if (c->closing) {
		maybe_free(w, i);
		return;
	}
	if (res == 0) {
		d->eof = 1;
		if (d->head < 0 && !d->sending) dir_done(w, i, s);
	} else if (res < 0 && res != -ENOBUFS && res != -ECANCELED) {
		kill_conn(w, i);
	} else if (!d->recv_armed) { /* ended without an error: armed again when it may read */
		if (res == -ENOBUFS) {
			d->starved = 1; /* once buffers come back (end of the turn) */
			w->starved[w->nstarved++] = i << 1 | s;
		} else if (d->paused && d->queued <= QMAX / 2) {
			d->paused = 0;
		}
		if (!d->starved && !d->paused) arm_recv(w, i, s);
	}
}

static void on_send(struct worker *w, int i, int s, int res) {
	struct conn *c = &w->conns[i];
	struct dir *d = &c->d[s];
	c->inflight--;
	d->sending = 0;
	if (c->closing) {
		maybe_free(w, i);
		return;
	}
	if (res < 0) {
		kill_conn(w, i);
		return;
	}
	int bid = d->head;
	d->off += res;
	if (d->off < w->len[bid]) {
		send_head(w, i, s);
		return;
	}
	d->head = w->next[bid];
	if (d->head < 0) d->tail = -1;
	d->off = 0;
	d->queued--;
	give_back(w, bid);
	if (d->paused && d->queued <= QMAX / 2) {
		d->paused = 0; /* a recv still armed is being cancelled: armed again when that ends */
		if (!d->recv_armed) arm_recv(w, i, s);
	}
	if (d->head >= 0) send_head(w, i, s);
	else if (d->eof) dir_done(w, i, s);
}

static void on_accept(struct worker *w, int res, unsigned flags) {
	if (!(flags & IORING_CQE_F_MORE)) {
		struct io_uring_sqe *q = sqe(w);
		io_uring_prep_multishot_accept(q, w->lfd, NULL, NULL, SOCK_CLOEXEC);
		io_uring_sqe_set_data64(q, ud(0, OP_ACCEPT, 0));
	}
	if (res < 0) return;
	int bfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (bfd < 0 || w->nfree == 0) {
		close(res);
		if (bfd >= 0) close(bfd);
		return;
	}
	int i = w->free_list[--w->nfree];
	struct conn *c = &w->conns[i];
	memset(c, 0, sizeof *c);
	c->used = 1;
	c->fd[0] = res;
	c->fd[1] = bfd;
	c->nodelay[0] = 1; /* from the listener */
	for (int s = 0; s < 2; s++) c->d[s].head = c->d[s].tail = -1;
	struct sockaddr_in *b = &backends[w->rr++ % nbackends];
	struct io_uring_sqe *q = sqe(w);
	io_uring_prep_connect(q, bfd, (struct sockaddr *)b, sizeof *b);
	io_uring_sqe_set_data64(q, ud(i, OP_CONNECT, 0));
	c->inflight++;
}

static void *thread_main(void *arg) {
	long t = (long)arg;
	struct worker *w = calloc(1, sizeof *w);
	struct io_uring_params p = {0};
	const char *mode = getenv("URING") ? getenv("URING") : "defer";
	if (!strcmp(mode, "defer")) p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	else if (!strcmp(mode, "coop")) p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
	else if (!strcmp(mode, "sqpoll")) {
		/* One polling kernel thread for both rings (the second attaches to the first's), which
		 * sleeps after SQ_IDLE ms (10) without submissions. */
		p.flags = IORING_SETUP_SQPOLL;
		p.sq_thread_idle = getenv("SQ_IDLE") ? atoi(getenv("SQ_IDLE")) : 10;
		if (t > 0) {
			while (!__atomic_load_n(&first_ring_fd, __ATOMIC_ACQUIRE)) usleep(1000);
			p.flags |= IORING_SETUP_ATTACH_WQ;
			p.wq_fd = first_ring_fd;
		}
	} else if (strcmp(mode, "plain")) die("URING: defer, coop, plain or sqpoll");
	int r = io_uring_queue_init_params(ENTRIES, &w->ring, &p);
	if (t == 0) __atomic_store_n(&first_ring_fd, w->ring.ring_fd, __ATOMIC_RELEASE);
	if (r < 0) {
		errno = -r;
		die("io_uring_queue_init_params");
	}
	w->lfd = listeners[t];
	w->rr = t;
	for (int i = MAX_CONNS - 1; i >= 0; i--) w->free_list[w->nfree++] = i;

	size_t ring_size = NBUF * sizeof(struct io_uring_buf);
	w->br = mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	w->bufs = malloc((size_t)NBUF * BUFSZ);
	if (w->br == MAP_FAILED || !w->bufs) die("buffers");
	io_uring_buf_ring_init(w->br);
	struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)w->br, .ring_entries = NBUF, .bgid = BGID};
	if ((r = io_uring_register_buf_ring(&w->ring, &reg, 0)) < 0) {
		errno = -r;
		die("io_uring_register_buf_ring");
	}
	for (int b = 0; b < NBUF; b++) give_back(w, b);

	struct io_uring_sqe *q = sqe(w);
	io_uring_prep_multishot_accept(q, w->lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(q, ud(0, OP_ACCEPT, 0));
	for (;;) {
		r = io_uring_submit_and_wait(&w->ring, 1);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
			errno = -r;
			die("io_uring_submit_and_wait");
		}
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		w->returned = 0;
		io_uring_for_each_cqe(&w->ring, head, cqe) {
			uint64_t u = cqe->user_data;
			int i = u >> 8, op = (u >> 1) & 0x7f, s = u & 1;
			seen++;
			switch (op) {
			case OP_ACCEPT: on_accept(w, cqe->res, cqe->flags); break;
			case OP_CONNECT:
				w->conns[i].inflight--;
				if (w->conns[i].closing) maybe_free(w, i);
				else if (cqe->res < 0) kill_conn(w, i);
				else arm_recv(w, i, 0), arm_recv(w, i, 1);
				break;
			case OP_RECV: on_recv(w, i, s, cqe->res, cqe->flags); break;
			case OP_SEND: on_send(w, i, s, cqe->res); break;
			default: break; /* close, cancel */
			}
		}
		io_uring_cq_advance(&w->ring, seen);
		/* Buffers came back: the recvs that ran out are armed again. */
		if (w->returned && w->nstarved) {
			for (int k = 0; k < w->nstarved; k++) {
				int i = w->starved[k] >> 1, s = w->starved[k] & 1;
				struct conn *c = &w->conns[i];
				if (!c->used || !c->d[s].starved) continue;
				c->d[s].starved = 0;
				if (!c->closing && !c->d[s].recv_armed && !c->d[s].paused) arm_recv(w, i, s);
			}
			w->nstarved = 0;
		}
	}
	return NULL;
}

int main(int argc, char **argv) {
	setup(argc, argv);
	run_threads();
	return 0;
}
