// slice TID NS [POLICY]: sets a thread's EEVDF slice (sched_attr.sched_runtime) for SCHED_OTHER (0) or SCHED_BATCH (3).
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/syscall.h>
struct attr { uint32_t size, policy; uint64_t flags; int32_t nice; uint32_t prio; uint64_t runtime, deadline, period; uint32_t umin, umax; };
int main(int argc, char **argv) {
  struct attr a = {0}; a.size = sizeof a; a.policy = argc > 3 ? atoi(argv[3]) : 0; a.runtime = strtoull(argv[2], 0, 10);
  struct attr g = {0};
  if (syscall(SYS_sched_getattr, atoi(argv[1]), &g, sizeof g, 0)) { perror("getattr"); return 1; }
  a.nice = g.nice;
  if (syscall(SYS_sched_setattr, atoi(argv[1]), &a, 0)) { perror("setattr"); return 1; }
  syscall(SYS_sched_getattr, atoi(argv[1]), &g, sizeof g, 0);
  fprintf(stderr, "tid %s policy %u runtime %llu\n", argv[1], g.policy, (unsigned long long)g.runtime);
  return 0;
}
