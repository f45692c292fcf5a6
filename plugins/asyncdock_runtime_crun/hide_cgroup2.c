/* asyncdock-hide-cgroup2 MOUNTPOINT COMMAND [ARG...]
 *
 * Runs COMMAND in a new mount namespace of its own in which MOUNTPOINT (a hybrid host's
 * cgroup2 mount, which crun 1.8 refuses to work beside) is detached. "/" is made a recursive
 * slave first, so the detach never propagates back to the host.
 *
 * Why a C program: the engine used to do these three system calls in a Python preexec_fn,
 * which makes Python fork() the whole engine (about 5 ms at 50 MiB, with the event loop
 * blocked) instead of vfork()ing; this helper costs one small exec instead. The crun plugin
 * falls back to the preexec_fn when the helper is not built.
 *
 * Exit status 125 and a message on stderr when the namespace cannot be made.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MOUNTPOINT COMMAND [ARG...]\n", argv[0]);
        return 125;
    }
    if (unshare(CLONE_NEWNS) != 0) {
        fprintf(stderr, "asyncdock-hide-cgroup2: unshare(CLONE_NEWNS): %s\n", strerror(errno));
        return 125;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) != 0) {
        fprintf(stderr, "asyncdock-hide-cgroup2: mount(/, MS_REC|MS_SLAVE): %s\n", strerror(errno));
        return 125;
    }
    /* EINVAL/ENOENT: nothing mounted there (hiding asked for on a host without the mount) */
    if (umount2(argv[1], MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
        fprintf(stderr, "asyncdock-hide-cgroup2: umount2(%s): %s\n", argv[1], strerror(errno));
        return 125;
    }
    execv(argv[2], argv + 2);
    fprintf(stderr, "asyncdock-hide-cgroup2: exec %s: %s\n", argv[2], strerror(errno));
    return 127;
}
