"""`vdiskio create` and `vdiskio convert` (qemu-img's word for `create --from`): one code
path, vdiskio.create.create_image. A create that fails or is interrupted leaves nothing
behind; a stop signal is turned into an exception so that the files made are removed."""

import os
import signal

from ..errors import VdError
from .common import say_error


class Interrupted(BaseException):
    """A stop signal arrived during a create (raised from the signal handler)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, frame):
    raise Interrupted(signum)


def make(image, progress_flag=None, **options):
    """create_image with the stop signals handled; the exit status."""
    from ..create import create_image
    from ..progress import Progress
    from ..vhd.create import STOP_SIGNALS
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}

    def progress(total):
        return Progress(total, enabled=progress_flag)
    try:
        create_image(image, progress=progress, **options)
    except VdError as e:
        say_error(e)
        return 1
    except Interrupted as stop:
        # The files made so far are gone (create_image removed them): say so, then die
        # of the signal, so the caller's exit status says what happened.
        name = signal.Signals(stop.signum).name
        say_error(f"{image}: create interrupted by {name}; nothing was left behind")
        signal.signal(stop.signum, signal.SIG_DFL)
        os.kill(os.getpid(), stop.signum)
        return 128 + stop.signum
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is _interrupt:
                signal.signal(sig, handler)
    return 0


def cmd_create(args):
    return make(args.image, args.progress, fmt=args.format, variant=args.variant,
                size=args.size, parent=args.parent, block_size=args.block_size,
                source=args.source, logical_sector_size=args.logical_sector_size,
                level=args.compression_level)


def cmd_convert(args):
    variant = args.variant
    block_size = None
    for option in args.options or []:
        for item in option.split(","):
            key, _, value = item.partition("=")
            if key == "subformat" and value:
                if variant is not None and variant != value:
                    say_error(f"-t {variant} and -o subformat={value} disagree")
                    return 2
                variant = value
            elif key in ("block_size", "block-size") and value:
                from .common import size_value
                try:
                    block_size = size_value(value)
                except ValueError as e:
                    say_error(f"-o {item}: {e}")
                    return 2
            else:
                say_error(f"-o {item}: unknown option (known: subformat=VARIANT,"
                          f" block_size=SIZE)")
                return 2
    if args.out_format == "raw":
        say_error("-O raw: vdiskio writes VHD, VHDX and VMDK; for a raw copy:"
                  f" vdiskio run -- dd if={args.source} of={args.target} bs=1M")
        return 2
    return make(args.target, args.progress, fmt=args.out_format, variant=variant,
                source=args.source, source_format=args.in_format, block_size=block_size,
                level=args.compression_level)


def add_progress_flags(p):
    p.add_argument("-p", "--progress", dest="progress", action="store_true", default=None,
                   help="show a progress bar (by default only when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="never show the progress bar")


