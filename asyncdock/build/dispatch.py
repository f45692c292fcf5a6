"""One instruction at a time, as moby's dispatchers.go: word expansion where moby's
instructions expand, the run config edit, the cache probe on the step's container_config
(`/bin/sh -c #(nop) ...` for config steps) and the step's image."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import errors
from ..base.oci import ContainerConfig
from . import gotext
from .state import DEFAULT_PATH, BuildFailed, StageState, Steps, config_copy
from ..images.configedit import apply_change
from .parse import Instruction, Stage, parse_trigger

if TYPE_CHECKING:
    from ..images.store import ImageRecord


def _shell(cfg: ContainerConfig) -> list[str]:
    return list(cfg.shell) if cfg.shell else ["/bin/sh", "-c"]


def _pairs(args: list[str]) -> list[tuple[str, str]]:
    return [(args[i], args[i + 1]) for i in range(0, len(args) - 1, 2)]


class Dispatcher:
    def __init__(self, build: Steps, state: StageState) -> None:
        self.build = build
        self.state = state

    # ---- expansion
    def expand(self, word: str) -> str:
        try:
            return self.build.lex.process_word(word, self.state.env())
        except errors.InvalidParameter:
            raise
        except Exception as e:  # noqa: BLE001 - any lexer failure is the Dockerfile's
            raise BuildFailed(str(e)) from None

    # ---- FROM
    async def from_(self, stage: Stage) -> None:
        st = self.state
        meta = st.args.all_meta()
        name = self.build.lex.process_word(stage.base, meta)
        if not name:
            raise BuildFailed(f"base name ({stage.base}) should not be blank")
        if stage.platform:
            await self.build.check_platform(self.build.lex.process_word(stage.platform, meta))
        if name.lower() == "scratch":
            st.image_id, st.image, st.image_config = "", None, None
            st.run_config = ContainerConfig()
        else:
            prior = self.build.stage(name)
            rec = await self.build.image_for(name) if prior is None else self.build.images.get(prior)
            cfg = self.build.images.config(rec)
            st.image_id, st.image, st.image_config = rec.id, rec, cfg
            st.run_config = config_copy(cfg.config) if cfg.config is not None else ContainerConfig()
            st.os = cfg.os or "linux"
            st.arch = cfg.architecture
        env = st.run_config.env or []
        if not any(kv.partition("=")[0] == "PATH" for kv in env):
            st.run_config.env = [*env, f"PATH={DEFAULT_PATH}"]
        st.run_config.image = st.image_id
        triggers = list(st.run_config.on_build or [])
        if triggers:
            st.run_config.on_build = None
            plural = "s" if len(triggers) > 1 else ""
            await self.build.out(f"# Executing {len(triggers)} build trigger{plural}\n")
            for t in triggers:
                st.run_config.image = st.image_id
                await self.dispatch(parse_trigger(t))

    # ---- dispatch
    async def dispatch(self, inst: Instruction) -> None:
        handler = getattr(self, "do_" + inst.cmd.lower())
        await handler(inst)
        self.state.run_config.image = self.state.image_id

    # ---- config instructions
    async def commit(self, comment: str) -> None:
        """moby's Builder.commit: probe the cache on the comment's Cmd, else a container made
        (never started) and committed."""
        cc = config_copy(self.state.run_config)
        cc.cmd = [*_shell(self.state.run_config), "#(nop) ", comment]
        await self.build.commit_config_step(self.state, cc)

    def edit(self, cmd: str, args: list[str], *, json_form: bool = False, flags: tuple[str, ...] = (),
             reset_cmd: bool = False) -> ContainerConfig:
        """The run config with one config instruction applied (images/configedit, shared with
        commit's `changes`); the builder expanded the words before."""
        self.state.run_config = apply_change(self.state.run_config, cmd, args, json_form=json_form, flags=flags,
                                             reset_cmd=reset_cmd)
        return self.state.run_config

    def _expanded_pairs(self, inst: Instruction) -> list[str]:
        if inst.no_expand:
            return list(inst.args)
        out: list[str] = []
        for k, v in _pairs(inst.args):
            out += [self.expand(k), self.expand(v)]
        return out

    async def do_env(self, inst: Instruction) -> None:
        words = self._expanded_pairs(inst)
        self.edit("ENV", words)
        await self.commit("ENV " + " ".join(f"{k}={v}" for k, v in _pairs(words)))

    async def do_maintainer(self, inst: Instruction) -> None:
        self.state.maintainer = " ".join(inst.args)
        await self.commit("MAINTAINER " + self.state.maintainer)

    async def do_label(self, inst: Instruction) -> None:
        words = self._expanded_pairs(inst)
        if any(not k for k, _ in _pairs(words)):
            raise BuildFailed("LABEL names can not be blank")
        self.edit("LABEL", words)
        await self.commit("LABEL " + " ".join(f"{k}={v}" for k, v in _pairs(words)))

    async def do_arg(self, inst: Instruction) -> None:
        parts = []
        for word in inst.args:
            key, eq, value = word.partition("=")
            val: str | None = self.expand(value) if eq else None
            key = self.expand(key)
            parts.append(key if val is None else f"{key}={val}")
            self.state.args.add(key, val)
        await self.commit("ARG " + " ".join(parts))

    async def do_cmd(self, inst: Instruction) -> None:
        cfg = self.edit("CMD", inst.args, json_form=inst.json)
        self.state.cmd_set = True
        await self.commit("CMD " + gotext.quote_list(cfg.cmd))

    async def do_entrypoint(self, inst: Instruction) -> None:
        cfg = self.edit("ENTRYPOINT", inst.args, json_form=inst.json, reset_cmd=not self.state.cmd_set)
        await self.commit("ENTRYPOINT " + gotext.quote_list(cfg.entrypoint))

    async def do_expose(self, inst: Instruction) -> None:
        ports: list[str] = []
        for a in inst.args:
            ports.extend(self.expand(a).split())
        self.edit("EXPOSE", ports)
        await self.commit("EXPOSE " + " ".join(ports))

    async def do_user(self, inst: Instruction) -> None:
        cfg = self.edit("USER", [self.expand(inst.args[0])])
        await self.commit("USER " + cfg.user)

    async def do_volume(self, inst: Instruction) -> None:
        names = [self.expand(a).strip() for a in inst.args]
        self.edit("VOLUME", names)
        await self.commit("VOLUME " + gotext.list_v(names))

    async def do_stopsignal(self, inst: Instruction) -> None:
        cfg = self.edit("STOPSIGNAL", [self.expand(inst.args[0])])
        await self.commit("STOPSIGNAL " + cfg.stop_signal)

    async def do_shell(self, inst: Instruction) -> None:
        cfg = self.edit("SHELL", inst.args, json_form=inst.json)
        await self.commit("SHELL " + gotext.quote_list(cfg.shell))

    async def do_onbuild(self, inst: Instruction) -> None:
        self.edit("ONBUILD", [inst.expression])
        await self.commit("ONBUILD " + inst.expression)

    async def do_healthcheck(self, inst: Instruction) -> None:
        cfg = self.edit("HEALTHCHECK", inst.args, json_form=inst.json, flags=inst.raw_flags)
        assert cfg.healthcheck is not None
        await self.commit("HEALTHCHECK " + gotext.healthcheck(cfg.healthcheck))

    async def do_workdir(self, inst: Instruction) -> None:
        cfg = self.edit("WORKDIR", [self.expand(inst.args[0])])
        cc = config_copy(cfg)
        cc.cmd = [*_shell(cfg), "#(nop) WORKDIR " + cfg.working_dir]
        await self.build.workdir_step(self.state, cc)

    # ---- RUN
    async def do_run(self, inst: Instruction) -> None:
        st = self.state
        cfg = st.run_config
        cmd = list(inst.args) if inst.json else [*_shell(cfg), inst.args[0]]
        build_args = st.args.filter_allowed(cfg.env)
        save_cmd = cmd
        if build_args:
            shown = sorted(kv for kv in build_args if st.args.is_referenced_or_not_builtin(kv.partition("=")[0]))
            save_cmd = [f"|{len(shown)}", *shown, *cmd]
        probe = config_copy(cfg)
        probe.cmd = save_cmd
        # moby's withEntrypointOverride: RUN runs without the entrypoint ([""] clears it at
        # create; the cache is probed with the nil it becomes)
        probe.entrypoint = None if save_cmd else probe.entrypoint
        run = config_copy(cfg)
        run.cmd = cmd
        run.env = [*(cfg.env or []), *build_args]
        run.entrypoint = [""] if save_cmd else run.entrypoint
        run.healthcheck = None
        await self.build.run_step(st, run, probe)

    # ---- COPY / ADD
    async def do_copy(self, inst: Instruction) -> None:
        await self._copy(inst, add=False)

    async def do_add(self, inst: Instruction) -> None:
        await self._copy(inst, add=True)

    async def _copy(self, inst: Instruction, *, add: bool) -> None:
        args = [self.expand(a) for a in inst.args]
        sources, dest = args[:-1], args[-1]
        chown = self.expand(inst.flags.get("chown", ""))
        chmod = self.expand(inst.flags.get("chmod", ""))
        from_ = inst.flags.get("from", "")
        source_image: ImageRecord | None = None
        if from_:
            ref = self.build.lex.process_word(from_, {**self.state.args.all_meta(), **self.state.args.all_allowed()})
            prior = self.build.stage(ref)
            if prior is not None:
                if not prior:
                    raise BuildFailed(f"COPY --from={ref} names a stage without an image (scratch)")
                source_image = self.build.images.get(prior)
            else:
                source_image = await self.build.image_for(ref)
        await self.build.copy_step(self.state, inst.cmd, sources, dest, chown=chown, chmod=chmod,
                                   source_image=source_image, add=add)

