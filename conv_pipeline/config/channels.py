"""The channel rule: how many channels the stack takes, and whether a file can give them.

One rule for every entry point. ``audio.channels`` (the policy: ``keep``, ``mono`` or a list
of channel indices) turns a file's channels into the stack's input; the stack's input count
is fixed before any audio by ``model.in_channels`` (a number), a checkpoint's first conv, a
front-end (one channel) or a ``mono``/list policy, else (``auto`` with ``keep``) by the audio.
A single file that cannot give the count is an ``InputError`` naming the fix; a corpus is
checked as a whole from its headers (``for_corpus``) before anything is processed.

Pure Python, no torch: the plan (``config/plan.py``) builds a ``ChannelRule``; the loader
(``load/signal.py: apply_channel_policy``) applies the policy to samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

from conv_pipeline.errors import ConfigError, InputError

Policy = Union[str, tuple]  # "keep", "mono" or channel indices


def policy_channel_count(policy: Union[str, Sequence[int]], file_channels: int) -> int:
    """Channels after the policy for a file with ``file_channels`` channels."""
    if policy == "keep":
        return file_channels
    if policy == "mono":
        return 1
    return len(policy)


def _found(groups: Mapping[int, Sequence[str]]) -> str:
    """``3 files with 1 channel (e.g. a.wav); 5 files with 2 channels (e.g. b.wav)``."""
    return "; ".join(
        f"{len(ps)} file{'s' if len(ps) != 1 else ''} with {c} channel{'s' if c != 1 else ''} (e.g. {ps[0]})"
        for c, ps in sorted(groups.items())
    )


def _policy_text(policy: Policy) -> str:
    return policy if isinstance(policy, str) else "[" + ",".join(str(i) for i in policy) + "]"


@dataclass(frozen=True)
class ChannelRule:
    """``policy``: ``audio.channels``. ``count``: the stack's input channels when known before
    any audio (else None: each file's count after the policy). ``source``: what fixed ``count``
    (for messages). ``groups``: the first conv's groups, which must divide the input channels.
    ``adjustable``: whether ``model.in_channels=N`` is a fix to offer (not when a checkpoint
    or a front-end fixed the count)."""

    policy: Policy
    count: Optional[int]
    source: str
    groups: int = 1
    adjustable: bool = True

    def after_policy(self, file_channels: int) -> int:
        return policy_channel_count(self.policy, file_channels)

    def fixes(self, have: int, want: int) -> str:
        """The overrides that make a file with ``have`` channels (after the policy) give ``want``."""
        if want == 1:
            options = ["audio.channels=mono", "audio.channels=[0]"]
        else:
            options = [f"audio.channels=[{','.join(str(i % have) for i in range(want))}]"]
        if self.adjustable and self.count is not None and "model.in_channels" in self.source:
            options.append(f"model.in_channels={have}")
        return " or ".join(options)

    def stack_channels(self, file_channels: int, path: str) -> int:
        """The stack's input channels for one file with ``file_channels`` channels (before the
        policy); ``InputError`` naming the file and the fix when it cannot give them."""
        if not isinstance(self.policy, str) and max(self.policy) >= file_channels:
            raise InputError(
                f"{path}: has {file_channels} channel(s) but audio.channels={_policy_text(self.policy)} "
                f"asks for channel {max(self.policy)}; use audio.channels=mono or indices below {file_channels}"
            )
        have = self.after_policy(file_channels)
        want = self.count if self.count is not None else have
        if have != want:
            raise InputError(
                f"{path}: has {have} channel(s) after audio.channels={_policy_text(self.policy)} but the stack "
                f"takes {want} ({self.source}); fix with {self.fixes(have, want)}"
            )
        if want % self.groups:
            raise InputError(
                f"{path}: has {want} channel(s) but model.layers[0].groups={self.groups} must divide the "
                f"input channels; set model.in_channels to a multiple of {self.groups} with a matching audio.channels"
            )
        return want

    def for_corpus(self, counts: Mapping[int, Sequence[str]], spec: str) -> int:
        """The stack's input channels for a whole corpus, from its files' channel counts
        (``{channels before the policy: [paths]}``, from the headers). ``ConfigError`` (before
        anything is processed) naming the counts found and the override that fixes it, unless
        every file can be processed under the policy."""
        if not isinstance(self.policy, str):
            short = {c: ps for c, ps in counts.items() if c <= max(self.policy)}
            if short:
                found = _found(short)
                raise ConfigError(
                    f"input={spec!r}: audio.channels={_policy_text(self.policy)} asks for channel "
                    f"{max(self.policy)} but some files have fewer: {found}; use audio.channels=mono"
                )
        after: dict[int, list[str]] = {}
        for c, paths in counts.items():
            after.setdefault(self.after_policy(c), []).extend(paths)
        want = self.count
        if want is None:
            if len(after) > 1:
                found = _found(after)
                raise ConfigError(
                    f"input={spec!r} mixes channel counts ({found}) but one stack takes one count; rerun "
                    "with audio.channels=mono (downmix every file) or audio.channels=[0] (the first channel)"
                )
            want = next(iter(after)) if after else None
        if want is None:
            return 0  # no file could be probed: each fails on its own
        wrong = {c: ps for c, ps in after.items() if c != want}
        if wrong:
            found = _found(wrong)
            have = min(wrong)
            raise ConfigError(
                f"input={spec!r}: the stack takes {want} channel(s) ({self.source}) but files have other "
                f"counts after audio.channels={_policy_text(self.policy)}: {found}; fix with {self.fixes(have, want)}"
            )
        if want % self.groups:
            raise ConfigError(
                f"input={spec!r}: files have {want} channel(s) but model.layers[0].groups={self.groups} "
                "must divide the input channels"
            )
        return want


def channel_rule(model_in_channels: object, policy: Policy, groups: int, checkpoint_channels: Optional[int],
                 checkpoint: Optional[str], frontend: Optional[str]) -> ChannelRule:
    """The rule for a config: the count fixed before any audio, and by what.

    ``ConfigError`` when two of ``model.in_channels``, the checkpoint, the front-end and the
    policy fix different counts."""
    fixed: list[tuple[int, str, bool]] = []  # (count, source, adjustable)
    if frontend is not None:
        fixed.append((1, f"model.frontend={frontend} works on one channel", False))
    if checkpoint_channels is not None:
        fixed.append((checkpoint_channels, f"model.checkpoint={checkpoint} expects it", False))
    if isinstance(model_in_channels, int) and not isinstance(model_in_channels, bool):
        fixed.append((model_in_channels, f"model.in_channels={model_in_channels}", True))
    for (a, a_src, _), (b, b_src, _) in zip(fixed, fixed[1:]):
        if a != b:
            raise ConfigError(f"{b_src} ({b} channel(s)) but {a_src} ({a}); drop one of them")
    if policy != "keep":
        n = policy_channel_count(policy, 0)
        if fixed and fixed[0][0] != n:
            count, src, adjustable = fixed[0]
            fix = "audio.channels=mono" if count == 1 else f"audio.channels=[{','.join(str(i) for i in range(count))}]"
            also = f", or model.in_channels={n} for {n} channel(s)" if adjustable and n % groups == 0 else ""
            raise ConfigError(
                f"audio.channels={_policy_text(policy)} gives {n} channel(s) but the stack takes {count} ({src}); "
                f"use {fix}{also}"
            )
        if not fixed:
            fixed.append((n, f"audio.channels={_policy_text(policy)}", True))
    if fixed and fixed[0][0] % groups:
        raise ConfigError(
            f"model.layers[0].groups={groups} must divide its input channels ({fixed[0][1]}: {fixed[0][0]})"
        )
    if not fixed:
        return ChannelRule(policy, None, "the audio's own count", groups)
    count, source, adjustable = fixed[0]
    return ChannelRule(policy, count, source, groups, adjustable and len(fixed) == 1)
