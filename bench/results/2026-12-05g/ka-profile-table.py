import sys, subprocess, re
# cat.py DIR MODE TH TM: inclusive µs/request of named kernel functions, both proxies.
d, mode, th, tm = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
tot = {'haproxy': th, 'makler': tm}
F = [('all system calls', 'entry_SYSCALL_64_after_hwframe'),
 ('  sendto (incl. the receiver\'s TCP input on loopback)', '__x64_sys_sendto'),
 ('  recvfrom', '__x64_sys_recvfrom'),
 ('  epoll_wait', '__x64_sys_epoll_wait'),
 ('  epoll_ctl', '__x64_sys_epoll_ctl'),
 ('  connect', '__x64_sys_connect'), ('  close', '__x64_sys_close'), ('  shutdown', '__x64_sys_shutdown'),
 ('  accept4', '__x64_sys_accept4'), ('  socket', '__x64_sys_socket'), ('  setsockopt', '__x64_sys_setsockopt'),
 ('switching (schedule, all)', '__schedule'),
 ('  of it preemption at system call exit', 'exit_to_user_mode_loop'),
 ('  finish_task_switch (self)', 'finish_task_switch.isra.0'),
 ('_raw_spin_unlock_irqrestore (self: end of wake-ups)', '_raw_spin_unlock_irqrestore'),
 ('softirq (loopback TCP input)', 'do_softirq.part.0'),
 ('  tcp_v4_rcv', 'tcp_v4_rcv'),
 ('  tcp_ack (ACK work)', 'tcp_ack'),
 ('  sock_def_readable (waking the peer, epoll callback)', 'sock_def_readable'),
 ('release_sock (incl. backlog processing)', 'release_sock'),
 ('ep_send_events (epoll_wait harvesting)', 'ep_send_events'),
 ('tcp_rcv_space_adjust (receive autotuning)', 'tcp_rcv_space_adjust'),
 ('tcp_cleanup_rbuf (window update check)', '__tcp_cleanup_rbuf'),
 ('copies to user (skb_copy_datagram_iter)', 'skb_copy_datagram_iter'),
 ('copies from user (_copy_from_iter)', '_copy_from_iter'),
 ('__check_object_size (hardened usercopy)', '__check_object_size'),
 ('memory accounting (sk_mem / memcg skmem)', '__sk_mem_raise_allocated|__sk_mem_reduce_allocated|sk_forced_mem_schedule|mem_cgroup_charge_skmem|mem_cgroup_uncharge_skmem|__sk_mem_schedule'),
 ('timers (sk_reset_timer, loss probe, mod_timer)', 'sk_reset_timer|tcp_schedule_loss_probe.part.0|mod_timer|__mod_timer|sk_stop_timer'),
 ('congestion control (bbr_main)', 'bbr_main'),
 ('skb alloc/free (kmem_cache, slab)', 'kmem_cache_alloc_node_noprof|kmem_cache_free|___slab_alloc|__slab_free|skb_release_data|__alloc_skb|kfree|skb_defer_free_flush'),
 ('syscall entry (do_syscall_64 self, fdget, fput)', 'do_syscall_64|fdget|fput'),
 ('own code and libraries (user)', '__USER__'),
]
data = {}
for n in tot:
    inc = {}; slf = {}; user = 0.0
    out = subprocess.run(['perf','report','-i',f'{d}/{n}.{mode}.data','--stdio','--children','-g','none','--sort','sym'], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r'\s+([\d.]+)%\s+([\d.]+)%\s+\[(.)\]\s+(.*)', line)
        if not m: continue
        c, s, kind, sym = float(m[1]), float(m[2]), m[3], m[4].strip()
        inc[sym] = c; slf[sym] = s
        if kind == '.': user += s
    data[n] = (inc, slf, user)
print(f"{mode}: µs of CPU per request, inclusive of callees unless 'self' (perf cpu-clock, samples × the run's CPU per request: HAProxy {th:.2f}, makler {tm:.2f})")
print(f"| {'where':52s} | HAProxy | makler |"); print(f"|{'-'*54}|---------|--------|")
for label, pat in F:
    vals = []
    for n in ('haproxy', 'makler'):
        inc, slf, user = data[n]
        if pat == '__USER__': v = user
        elif 'self' in label or pat.startswith('_raw') or pat.startswith('do_syscall_64') or pat.startswith('kmem_cache') or pat.startswith('bbr'):
            v = sum(slf.get(p, 0) for p in pat.split('|'))
        else: v = sum(inc.get(p, 0) for p in pat.split('|'))
        vals.append(v * tot[n] / 100)
    print(f"| {label:52s} | {vals[0]:7.2f} | {vals[1]:6.2f} |")
