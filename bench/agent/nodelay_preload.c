/* Diagnostic only: an LD_PRELOAD shim that sets TCP_NODELAY on every socket
 * the agent accepts, i.e. what httplib::Server::set_tcp_nodelay(true) would
 * do, to measure that change without rebuilding the agent (docs/load.md).
 *
 *   cc -O2 -shared -fPIC -o /tmp/nodelay.so bench/agent/nodelay_preload.c -ldl
 *   scripts/load-test.sh --agent-env LD_PRELOAD=/tmp/nodelay.so build/release/gpucluster
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void set_nodelay(int fd) {
  if (fd >= 0) {
    int on = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  }
}

int accept(int fd, struct sockaddr *address, socklen_t *length) {
  static int (*real)(int, struct sockaddr *, socklen_t *);
  if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
  int client = real(fd, address, length);
  set_nodelay(client);
  return client;
}

int accept4(int fd, struct sockaddr *address, socklen_t *length, int flags) {
  static int (*real)(int, struct sockaddr *, socklen_t *, int);
  if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
  int client = real(fd, address, length, flags);
  set_nodelay(client);
  return client;
}
