/* spawn [-m] N PROG ARGS...: run PROG N times, one after the other, with this
 * environment. A sample of N start-ups lasts tens of milliseconds, long enough to time
 * well; the spawner itself is one extra start-up in N + 1.
 * -m: print the largest peak RSS of the children (KiB). A child's ru_maxrss includes
 * what its address space held before exec, so it is measured from this small program
 * rather than from the Python harness (whose own 15 MiB would show in every child). */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

extern char **environ;

int main(int argc, char **argv)
{
    int rss = argc > 1 && strcmp(argv[1], "-m") == 0;
    argv += rss;
    argc -= rss;
    if (argc < 3) {
        fprintf(stderr, "usage: spawn [-m] N PROG ARGS...\n");
        return 2;
    }
    long maxrss = 0;
    long n = strtol(argv[1], NULL, 0);
    for (long i = 0; i < n; i++) {
        pid_t pid;
        int status, err = posix_spawnp(&pid, argv[2], NULL, NULL, argv + 2, environ);
        if (err) {
            fprintf(stderr, "spawn: %s: error %d\n", argv[2], err);
            return 1;
        }
        struct rusage ru;
        if (wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
            fprintf(stderr, "spawn: %s failed (status %#x)\n", argv[2], status);
            return 1;
        }
        if (ru.ru_maxrss > maxrss)
            maxrss = ru.ru_maxrss;
    }
    if (rss)
        printf("%ld\n", maxrss);
    return 0;
}
