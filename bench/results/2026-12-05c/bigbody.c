// bigbody PORT SIZE: HTTP/1.1 keep-alive server answering every GET with SIZE bytes, a thread per connection.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static char *resp; static size_t resp_len;
static void *serve(void *arg) {
  int fd = (int)(long)arg; char buf[4096]; size_t have = 0;
  for (;;) {
    ssize_t n = read(fd, buf + have, sizeof buf - have);
    if (n <= 0) break;
    have += n;
    char *end;
    while ((end = memmem(buf, have, "\r\n\r\n", 4))) {
      size_t used = end + 4 - buf, off = 0;
      while (off < resp_len) { ssize_t w = write(fd, resp + off, resp_len - off); if (w <= 0) goto out; off += w; }
      memmove(buf, buf + used, have - used); have -= used;
    }
    if (have == sizeof buf) break;
  }
out: close(fd); return NULL;
}
#include <signal.h>
int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  size_t size = strtoul(argv[2], 0, 10);
  char head[200]; int h = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", size);
  resp_len = h + size; resp = malloc(resp_len); memcpy(resp, head, h); memset(resp + h, 'x', size);
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])), .sin_addr.s_addr = htonl(0x7f000001)};
  if (bind(s, (void *)&a, sizeof a) || listen(s, 1024)) { perror("bind"); return 1; }
  for (;;) {
    int c = accept(s, 0, 0); if (c < 0) continue;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_t t; pthread_create(&t, 0, serve, (void *)(long)c); pthread_detach(t);
  }
}
