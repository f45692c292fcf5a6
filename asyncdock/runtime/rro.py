"""Can a read-only bind be made recursively read-only (`rro`, API 1.44)? moby's
supportsRecursivelyReadOnly: the kernel needs mount_setattr (Linux 5.12) and the OCI runtime
must list `rro` among its mount options (`<runtime> features`; see CLIRuntime.mount_options)."""
from __future__ import annotations

import ctypes
import errno

_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (new syscalls are unified)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def kernel_has_mount_setattr() -> bool:
    """An invalid call (no path, no attributes): EINVAL/EFAULT where the call exists, ENOSYS where not."""
    r = _libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(-1), ctypes.c_char_p(None),
                      ctypes.c_uint(0), ctypes.c_void_p(None), ctypes.c_size_t(0))
    return r == 0 or ctypes.get_errno() != errno.ENOSYS


def rro_unsupported(runtime: str, mount_options: frozenset[str] | None) -> str:
    """Why `rro` cannot be used with `runtime` (moby's texts), or "" when it can."""
    if not kernel_has_mount_setattr():
        return "rro is not supported: failed to call mount_setattr: function not implemented (kernel is older than 5.12?)"
    if mount_options is None:
        return f'rro is not supported by runtime "{runtime}": OCI features struct is not available'
    if "rro" not in mount_options:
        return f'rro is not supported by runtime "{runtime}"'
    return ""
