"""`vdiskio run` (a command with the library preloaded) and `vdiskio preload-path`."""

import os
import shutil

from .. import library_path, settings
from .common import CliError

ENV_FLAGS = {"debug": settings.DEBUG, "dump": settings.DUMP}
# Debian leaves these off a user's PATH, but fdisk, mkfs and e2fsck live there and
# work on image files without root.
SBIN_DIRS = "/usr/local/sbin:/usr/sbin:/sbin"


def find_command(name):
    """The program to exec: `name` itself when it has a slash, else from PATH, else from
    the sbin directories; CliError (exit 127) naming where it looked."""
    if "/" in name:
        return name
    found = shutil.which(name) or shutil.which(name, path=SBIN_DIRS)
    if found is None:
        raise CliError(f"run: {name}: command not found (looked in PATH and {SBIN_DIRS})", 127)
    return found


def cmd_run(args):
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise CliError("run: no command given (vdiskio run -- CMD ARGS...)", 2)
    lib = library_path()
    if not os.path.exists(lib):
        raise CliError(f"{lib} is missing: build the project first (make build)")
    program = find_command(command[0])
    env = dict(os.environ)
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = lib + (" " + preload if preload else "")
    for flag, var in ENV_FLAGS.items():
        if getattr(args, flag):
            env[var] = "1"
    if args.log:
        log = os.path.abspath(args.log)
        try:        # the library would fall back to stderr silently: say it here
            os.close(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError as e:
            raise CliError(f"--log {args.log}: cannot write: {e.strerror}", 2) from None
        env[settings.LOG] = log
    try:
        os.execve(program, command, env)
    except OSError as e:
        raise CliError(f"run: {command[0]}: {e.strerror}", 127) from None


def cmd_preload_path(args):
    print(library_path())
    return 0
