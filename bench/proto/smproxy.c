// smproxy: a minimal TCP proxy whose bytes never leave the kernel (issue 22, prototype, branch `sockmap`).
//
// It accepts on 127.0.0.1:PORT, connects each accepted connection to the next backend (round robin per
// connection), and puts both sockets in a BPF sockhash. One sk_skb stream-verdict program, attached to the
// map, runs on every segment that arrives on either socket and redirects it to the other socket's egress
// with bpf_sk_redirect_hash: user space never reads or writes the proxied bytes (except a request already
// queued before its socket entered the map; a prototype: a segment arriving while user space hands those
// bytes on could overtake them, which a request-reply client never provokes). User space only accepts, pairs and closes: when the client
// side ends (FIN, reset, error) both sockets are closed; a backend's FIN alone waits for the client, since
// the backend's last bytes may still be queued for the client's socket in the kernel's sockmap work queue.
//
// The program is written as BPF instructions here (no clang, no libbpf): it keys the sockhash by
// (local port << 16 | remote port) of the socket a segment arrived on, and the map holds, under that key,
// the paired socket. Loopback only; it stops by itself after SECONDS.
//
//   smproxy PORT SECONDS BACKEND_IP:PORT [BACKEND_IP:PORT ...]
//
// Prints "listening tcp=127.0.0.1:PORT pid=PID" once ready; at exit "accepted N closed M".
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#define MAXFD 65536
#define INSN(c, d, s, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})

static int bpf(int cmd, union bpf_attr *attr) { return syscall(__NR_bpf, cmd, attr, sizeof(*attr)); }

static void die(const char *what) {
  perror(what);
  exit(1);
}

static int map_fd;
static struct {
  int peer;         // the paired socket, -1 when free
  char client;      // the accepted side
  char eof;         // FIN seen
} conns[MAXFD];
static unsigned long accepted, closed;
static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static int load_program(void) {
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_type = BPF_MAP_TYPE_SOCKHASH;
  a.key_size = 4;
  a.value_size = 4;
  a.max_entries = MAXFD;
  map_fd = bpf(BPF_MAP_CREATE, &a);
  if (map_fd < 0) die("BPF_MAP_CREATE sockhash");
  struct bpf_insn prog[] = {
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),                                          // r6 = skb
      INSN(BPF_LDX | BPF_MEM | BPF_W, 2, 1, offsetof(struct __sk_buff, remote_port), 0),      // r2 = remote_port (be16 << 16)
      INSN(BPF_ALU64 | BPF_RSH | BPF_K, 2, 0, 0, 16),                                         // r2 >>= 16
      INSN(BPF_ALU | BPF_END | BPF_TO_BE, 2, 0, 0, 16),                                        // r2 = ntohs(r2)
      INSN(BPF_LDX | BPF_MEM | BPF_W, 3, 1, offsetof(struct __sk_buff, local_port), 0),       // r3 = local_port
      INSN(BPF_ALU64 | BPF_LSH | BPF_K, 3, 0, 0, 16),                                         // r3 <<= 16
      INSN(BPF_ALU64 | BPF_OR | BPF_X, 3, 2, 0, 0),                                           // r3 |= r2
      INSN(BPF_STX | BPF_MEM | BPF_W, 10, 3, -4, 0),                                          // key on the stack
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0),                                          // r1 = skb
      INSN(BPF_LD | BPF_IMM | BPF_DW, 2, BPF_PSEUDO_MAP_FD, 0, 0),                            // r2 = map
      INSN(0, 0, 0, 0, 0),
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0),                                         // r3 = &key
      INSN(BPF_ALU64 | BPF_ADD | BPF_K, 3, 0, 0, -4),
      INSN(BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 0),                                          // flags 0: the peer's egress
      INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_redirect_hash),                           // SK_PASS, or SK_DROP if no peer
      INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  prog[9].imm = map_fd;
  static char log[65536];
  memset(&a, 0, sizeof a);
  a.prog_type = BPF_PROG_TYPE_SK_SKB;
  a.insns = (uint64_t)(uintptr_t)prog;
  a.insn_cnt = sizeof prog / sizeof prog[0];
  a.license = (uint64_t)(uintptr_t) "GPL";
  a.log_buf = (uint64_t)(uintptr_t)log;
  a.log_size = sizeof log;
  a.log_level = 1;
  int prog_fd = bpf(BPF_PROG_LOAD, &a);
  if (prog_fd < 0) {
    fprintf(stderr, "verifier:\n%s\n", log);
    die("BPF_PROG_LOAD sk_skb");
  }
  memset(&a, 0, sizeof a);
  a.target_fd = map_fd;
  a.attach_bpf_fd = prog_fd;
  a.attach_type = BPF_SK_SKB_STREAM_VERDICT;
  if (bpf(BPF_PROG_ATTACH, &a) < 0) die("BPF_PROG_ATTACH stream verdict");
  return prog_fd;
}

static uint32_t key_of(int fd) {
  struct sockaddr_in l, r;
  socklen_t n = sizeof l;
  if (getsockname(fd, (struct sockaddr *)&l, &n) < 0) die("getsockname");
  n = sizeof r;
  if (getpeername(fd, (struct sockaddr *)&r, &n) < 0) return 0;
  return (uint32_t)ntohs(l.sin_port) << 16 | ntohs(r.sin_port);
}

static int put(uint32_t key, int fd) {
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_fd = map_fd;
  a.key = (uint64_t)(uintptr_t)&key;
  a.value = (uint64_t)(uintptr_t)&fd;
  a.flags = BPF_ANY;
  return bpf(BPF_MAP_UPDATE_ELEM, &a);
}

static void close_pair(int fd) {
  int peer = conns[fd].peer;
  conns[fd].peer = -1;
  close(fd);  // closing a socket also takes it out of the sockhash
  if (peer >= 0) {
    conns[peer].peer = -1;
    close(peer);
  }
  closed++;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: smproxy PORT SECONDS BACKEND_IP:PORT...\n");
    return 2;
  }
  int nb = argc - 3, next = 0;
  struct sockaddr_in be[nb];
  for (int i = 0; i < nb; i++) {
    char host[64];
    int port;
    if (sscanf(argv[3 + i], "%63[^:]:%d", host, &port) != 2) return 2;
    memset(&be[i], 0, sizeof be[i]);
    be[i].sin_family = AF_INET;
    be[i].sin_port = htons(port);
    if (inet_pton(AF_INET, host, &be[i].sin_addr) != 1) return 2;
  }
  for (int i = 0; i < MAXFD; i++) conns[i].peer = -1;
  load_program();

  int one = 1;
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
  la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&la, sizeof la) < 0) die("bind");
  if (listen(lfd, 4096) < 0) die("listen");
  socklen_t ln = sizeof la;
  getsockname(lfd, (struct sockaddr *)&la, &ln);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  printf("listening tcp=127.0.0.1:%d pid=%d\n", ntohs(la.sin_port), getpid());
  fflush(stdout);

  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  double seconds = atof(argv[2]);
  struct epoll_event evs[256];
  static char buf[65536];
  signal(SIGTERM, on_term);
  while (!stop) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    double left = seconds - (now.tv_sec - t0.tv_sec) - (now.tv_nsec - t0.tv_nsec) / 1e9;
    if (left <= 0) break;
    int n = epoll_wait(ep, evs, 256, (int)(left * 1000) + 1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == lfd) {
        int c;
        while ((c = accept4(lfd, NULL, NULL, 0)) >= 0) {
          int b = socket(AF_INET, SOCK_STREAM, 0);
          if (c >= MAXFD || b < 0 || b >= MAXFD) die("too many sockets");
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          if (connect(b, (struct sockaddr *)&be[next], sizeof be[next]) < 0) {
            perror("connect");
            close(b);
            close(c);
            continue;
          }
          next = (next + 1) % nb;
          accepted++;
          // The backend first: what arrives on the client's socket is redirected to it.
          if (put(key_of(c), b) < 0 || put(key_of(b), c) < 0) {
            perror("BPF_MAP_UPDATE_ELEM");
            close(b);
            close(c);
            continue;
          }
          conns[c].peer = b, conns[c].client = 1, conns[c].eof = 0;
          conns[b].peer = c, conns[b].client = 0, conns[b].eof = 0;
          // Bytes that arrived before the client's socket entered the map stay in its receive
          // queue until the next segment: forward them here.
          ssize_t r;
          while ((r = recv(c, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
            if (send(b, buf, r, MSG_NOSIGNAL) != r) break;
          }
          struct epoll_event e = {.events = EPOLLRDHUP | EPOLLET};
          e.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
          e.data.fd = b;
          epoll_ctl(ep, EPOLL_CTL_ADD, b, &e);
          if (r == 0) close_pair(c);
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) perror("accept");
        continue;
      }
      if (conns[fd].peer < 0) continue;
      uint32_t e = evs[i].events;
      if (e & (EPOLLERR | EPOLLHUP) || conns[fd].client) {
        close_pair(fd);
      } else {
        conns[fd].eof = 1;  // the backend's FIN: its last bytes may still be on their way
        if (conns[conns[fd].peer].eof) close_pair(fd);
      }
    }
  }
  fprintf(stderr, "accepted %lu closed %lu\n", accepted, closed);
  return 0;
}
