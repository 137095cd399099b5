/* Where an unconnected UDP socket sends: the destination named by the sendto() or sendmsg() the send is
 * part of (NET_UDP_DEST: the socket hooks run inside that call, its arguments in the x86-64 syscall
 * registers). */

#if NET_UDP_DEST
/* The destination, found through the task's syscall registers, stored into raddr as the socket's family
 * stores addresses: an IPv6 socket sending to an IPv4 sockaddr gets the v4-mapped address, as the kernel
 * itself treats it. Other callers (sendmmsg, io_uring, sendfile) leave raddr as it is (unknown). */
static __always_inline void udp_destination(u16 family, u8 *raddr)
{
    struct pt_regs *regs = CURRENT_SYSCALL_REGS();
    u64 name = 0;                         /* user address of the destination's sockaddr */
    u64 nr = regs->orig_ax;
    if (nr == NR_SENDTO)
        name = regs->r8;                  /* sendto(fd, buf, len, flags, dest_addr, addrlen) */
    else if (nr == NR_SENDMSG)
        read_user(&name, sizeof(name), (void *)regs->si);  /* struct user_msghdr: msg_name first */
    if (!name)
        return;
    struct {
        u16 family;
        u16 port;
        u8 v4[4];                         /* sockaddr_in's address; sockaddr_in6's flowinfo */
    } head = {};
    if (read_user(&head, sizeof(head), (void *)name) != 0)
        return;
    if (head.family == NET_AF_INET && family == NET_AF_INET) {
        __builtin_memcpy(raddr, head.v4, 4);
    } else if (head.family == NET_AF_INET && family == NET_AF_INET6) {
        raddr[10] = 0xff;                 /* ::ffff:a.b.c.d */
        raddr[11] = 0xff;
        __builtin_memcpy(raddr + 12, head.v4, 4);
    } else if (head.family == NET_AF_INET6 && family == NET_AF_INET6) {
        read_user(raddr, NET_ADDR_LEN, (void *)(name + 8));  /* sin6_addr */
    }
}
#endif
