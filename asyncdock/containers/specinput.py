"""From a container record (Docker's Config + HostConfig) to the spec builder's input."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..base import errors
from .models import ContainerRecord
from .resources import spec_resources
from .spec import (DEFAULT_PATH_ENV, BindMount, DeviceMapping, SpecInput, TmpfsMount, Ulimit, find_executable,
                   path_from_env, resolve_in_rootfs, resolve_user)

if TYPE_CHECKING:
    from .supervisor import Supervisor


def _ns_path(mgr: Supervisor, mode: str, kind: str) -> str:
    ref = mode.split(":", 1)[1]
    other = mgr.store.get(ref)
    pid = mgr.live(other).pid
    if not other.state.running or not pid:
        raise errors.Conflict(f"cannot join {kind} of a non running container: {ref}")
    return f"/proc/{pid}/ns/{kind}"


def _security(opts: list[str]) -> tuple[bool, str, str, bool]:
    nnp, seccomp, apparmor, unconfined_paths = False, "default", "", False
    for o in opts:
        key, sep, value = o.partition("=") if "=" in o else o.partition(":")
        if key == "no-new-privileges":
            nnp = (value or "true").lower() in ("true", "1", "")
        elif key == "seccomp":
            seccomp = value or "default"
        elif key == "apparmor":
            apparmor = value
        elif key == "systempaths":
            unconfined_paths = value == "unconfined"
        elif key in ("label", "proc-opts", "mask", "unmask"):
            continue
        else:
            raise errors.InvalidParameter(f"invalid --security-opt: {o!r}")
    return nnp, seccomp, apparmor, unconfined_paths


def _group_ids(rootfs: Path, groups: list[str]) -> list[int]:
    out: list[int] = []
    names: dict[str, int] = {}
    try:
        text = resolve_in_rootfs(rootfs, "/etc/group").read_text(errors="replace")
        for line in text.splitlines():
            f = line.split(":")
            if len(f) >= 3 and f[2].isdigit():
                names[f[0]] = int(f[2])
    except OSError:
        pass
    for g in groups:
        if g.isdigit():
            out.append(int(g))
        elif g in names:
            out.append(names[g])
        else:
            raise errors.InvalidParameter(f"Unable to find group {g}: no matching entries in group file")
    return out


def _rro_unsupported(mgr: Supervisor, rec: ContainerRecord, binds: list[BindMount]) -> str:
    from ..runtime.rro import rro_unsupported

    if not any(b.readonly and not b.readonly_non_recursive for b in binds):
        return ""  # nothing would use it: no system call, no question to the runtime
    rt = mgr.runtimes.get(rec.runtime)
    # a runtime that is not a runtime/cli.py one (the tests' fake) says nothing: None
    return rro_unsupported(rec.runtime, getattr(rt, "mount_options", None))


def spec_input(mgr: Supervisor, rec: ContainerRecord, rootfs: Path, files_dir: Path,
               cgroups_path: str, *, binds: list[BindMount], netns: str,
               link_env: list[str] | None = None) -> SpecInput:
    """`binds` are the volume manager's (-v, --mount bind/volume, VOLUME, --volumes-from);
    `netns` the network manager's sandbox: "host", "none" or a namespace path ("" for
    container:X, joined here); `link_env` what legacy links add (the container's own Env wins)."""
    cfg, hc = rec.config, rec.host_config
    env = list(cfg.env or [])
    keys = {e.split("=", 1)[0] for e in env}
    if "PATH" not in keys:
        env.insert(0, f"PATH={DEFAULT_PATH_ENV}")
    if "HOSTNAME" not in keys:
        env.append(f"HOSTNAME={cfg.hostname}")
    if cfg.tty and "TERM" not in keys:
        env.append("TERM=xterm")
    for entry in link_env or ():
        if entry.split("=", 1)[0] not in keys:
            env.append(entry)
    cwd = cfg.working_dir or "/"
    argv = [rec.path, *rec.args]
    find_executable(rootfs, rec.path, path_from_env(env), cwd)
    uid, gid, extra = resolve_user(rootfs, cfg.user)
    extra = extra + [g for g in _group_ids(rootfs, list(hc.group_add or [])) if g not in extra]
    nnp, seccomp, apparmor, unconfined_paths = _security(list(hc.security_opt or []))
    binds = list(binds)
    tmpfs = [TmpfsMount(destination=d, options=tuple(o for o in opts.split(",") if o))
             for d, opts in (hc.tmpfs or {}).items()]
    for m in hc.mounts or []:
        if m.type == "tmpfs":
            t = m.tmpfs_options or {}
            opts = []
            if t.get("SizeBytes"):
                opts.append(f"size={int(t['SizeBytes'])}")
            if t.get("Mode"):
                opts.append(f"mode={int(t['Mode']):o}")
            tmpfs.append(TmpfsMount(destination=m.target, options=tuple(opts)))
    net = hc.network_mode
    network = _ns_path(mgr, net, "net") if net.startswith("container:") else (netns or "none")
    pid = "private"
    if hc.pid_mode == "host":
        pid = "host"
    elif hc.pid_mode.startswith("container:"):
        pid = _ns_path(mgr, hc.pid_mode, "pid")
    ipc = hc.ipc_mode or "private"
    if ipc.startswith("container:"):
        ipc = _ns_path(mgr, ipc, "ipc")
    return SpecInput(
        rootfs=str(rootfs), args=argv, env=env, cwd=cwd, uid=uid, gid=gid, additional_gids=extra,
        hostname=cfg.hostname if hc.uts_mode != "host" else "", domainname=cfg.domainname, tty=cfg.tty,
        readonly_rootfs=hc.readonly_rootfs, privileged=hc.privileged, cap_add=list(hc.cap_add or []),
        cap_drop=list(hc.cap_drop or []), no_new_privileges=nnp, seccomp=seccomp, apparmor=apparmor,
        systempaths_unconfined=unconfined_paths, masked_paths=hc.masked_paths, readonly_paths=hc.readonly_paths,
        binds=binds, tmpfs=tmpfs,
        devices=[DeviceMapping(d.path_on_host, d.path_in_container or d.path_on_host, d.cgroup_permissions or "rwm")
                 for d in hc.devices or []],
        sysctls=dict(hc.sysctls or {}), ulimits=[Ulimit(u.name, u.soft, u.hard) for u in hc.ulimits or []],
        resources=spec_resources(hc), network=network, pid=pid, ipc=ipc,
        uts="host" if hc.uts_mode == "host" else "private",
        cgroupns=hc.cgroupns_mode, shm_size=hc.shm_size, init=bool(hc.init), cgroups_path=cgroups_path,
        oom_score_adj=hc.oom_score_adj, rro_unsupported=_rro_unsupported(mgr, rec, binds),
        etc_files={name: str(files_dir / name) for name in ("hostname", "hosts", "resolv.conf")})
