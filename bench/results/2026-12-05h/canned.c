// Diagnostic: a UDP server shaped like makler-load's echo (epoll edge-triggered, drain with
// recvfrom, sendto each), that answers a binary query with a fixed 10-instance reply carrying the
// request's id: the generator's cost per broker-shaped reply, with a server that does no work.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
int main(int argc,char**argv){
  // argv[1]: port; argv[2]: hex of the reply body after the id (variant, count, entries); argv[3]: mode e=echo c=canned
  int s=socket(AF_INET,SOCK_DGRAM|SOCK_NONBLOCK,0);
  int big=4<<20; setsockopt(s,SOL_SOCKET,SO_RCVBUF,&big,sizeof big); setsockopt(s,SOL_SOCKET,SO_SNDBUF,&big,sizeof big);
  struct sockaddr_in a={.sin_family=AF_INET,.sin_port=htons(atoi(argv[1])),.sin_addr.s_addr=htonl(0x7f000001)};
  if(bind(s,(void*)&a,sizeof a)){perror("bind");return 1;}
  unsigned char body[2048]; int bl=0; const char*h=argv[2]; while(h[0]&&h[1]){sscanf(h,"%2hhx",&body[bl++]);h+=2;}
  int ep=epoll_create1(0); struct epoll_event ev={.events=EPOLLIN|EPOLLET}; epoll_ctl(ep,EPOLL_CTL_ADD,s,&ev);
  unsigned char buf[65536], out[4096]; struct sockaddr_in f; socklen_t fl;
  for(;;){ struct epoll_event e[8]; int n=epoll_wait(ep,e,8,-1); if(n<0&&errno!=EINTR) return 1;
    for(;;){ fl=sizeof f; ssize_t r=recvfrom(s,buf,sizeof buf,0,(void*)&f,&fl); if(r<0){ if(errno==EAGAIN) break; continue; }
      if(argv[3][0]=='e'){ sendto(s,buf,r,0,(void*)&f,fl); continue; }
      int i=1; out[0]=buf[0]; while(i<r&&i<6){ out[i]=buf[i]; if(!(buf[i]&0x80)){i++;break;} i++; }
      memcpy(out+i,body,bl); sendto(s,out,i+bl,0,(void*)&f,fl); } }
}
