"""Replay memory of transitions, sampled as sequences (R2D2-style) or single steps.

Each lane of the environment has its own ring of steps, written together. A step stores the
candle index of its frame (not the frame: frames come from the FrameCache), the position
features, action, reward, terminated flag, episode id and, for recurrent policies, the hidden
state the policy held when it acted. A sampled sequence never crosses an episode boundary, so
within it step k+1 is the next state of step k; its stored hidden state at the first step seeds
the burn-in (R2D2's "stored state" strategy), so the recurrent cell is trained on the same kind
of carried state it acts with. Truncation needs no flag: it only ends the episode (a new episode
id follows), and the truncated step keeps its next state to bootstrap from. A step whose next
state is not the next candle (a break in the history) is stored as dropped: no sequence holds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class SequenceBatch:
    idx: np.ndarray
    """(B, T+1) candle indices of the frames: the T steps and the next state of the last step."""
    position: torch.Tensor
    """(B, T+1, 2) position features, same layout as ``idx``."""
    action: torch.Tensor
    """(B, T) int64."""
    reward: torch.Tensor
    """(B, T) float32 (already scaled by the trainer)."""
    terminated: torch.Tensor
    """(B, T) float32, 1 where the episode really ended (no value after it)."""
    hidden: torch.Tensor | None
    """(1, B, H) hidden state stored at the first step, or None for stateless policies."""


class SequenceReplay:
    """``capacity`` steps in total, split over ``lanes`` rings."""

    def __init__(self, capacity: int, lanes: int, hidden_size: int = 0, seed: int = 0) -> None:
        self.cap = max(2, capacity // lanes)
        self.lanes = lanes
        self.rng = np.random.default_rng(seed)
        shape = (self.cap, lanes)
        self.idx = np.zeros(shape, np.int64)
        self.pos = np.zeros((*shape, 2), np.float32)
        self.action = np.zeros(shape, np.int64)
        self.reward = np.zeros(shape, np.float32)
        self.terminated = np.zeros(shape, np.float32)
        self.next_idx = np.zeros(shape, np.int64)
        self.next_pos = np.zeros((*shape, 2), np.float32)
        self.episode = np.full(shape, -1, np.int64)
        self.hidden = np.zeros((*shape, hidden_size), np.float32) if hidden_size else None
        self.write = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size * self.lanes

    @property
    def capacity(self) -> int:
        """Transitions it holds when full (all lanes)."""
        return self.cap * self.lanes

    def add(
        self,
        idx: np.ndarray,
        pos: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        next_idx: np.ndarray,
        next_pos: np.ndarray,
        episode: np.ndarray,
        hidden: np.ndarray | None = None,
        valid: np.ndarray | None = None,
    ) -> None:
        """One step of every lane; ``hidden`` is ``(lanes, H)``, the state before acting;
        ``valid`` False drops a lane's step (its next state is not the next candle)."""
        w = self.write
        self.idx[w], self.pos[w], self.action[w], self.reward[w] = idx, pos, action, reward
        self.terminated[w], self.next_idx[w], self.next_pos[w] = terminated, next_idx, next_pos
        self.episode[w] = episode if valid is None else np.where(valid, episode, -1)
        if self.hidden is not None and hidden is not None:
            self.hidden[w] = hidden
        self.write = (w + 1) % self.cap
        self.size = min(self.size + 1, self.cap)

    def can_sample(self, length: int) -> bool:
        return self.size >= length

    def sample(self, batch: int, length: int) -> SequenceBatch:
        """``batch`` sequences of ``length`` consecutive steps of one lane and one episode."""
        if not self.can_sample(length):
            raise ValueError(
                f"replay holds {self.size} steps per lane, fewer than the sequence length {length}"
            )
        oldest = (self.write - self.size) % self.cap
        lanes = np.empty(batch, np.int64)
        starts = np.empty(batch, np.int64)
        got = 0
        for _ in range(100):  # rejection sampling; sequences crossing an episode end are rare
            n = batch - got
            lane = self.rng.integers(0, self.lanes, n)
            rel = self.rng.integers(0, self.size - length + 1, n)
            first = (oldest + rel) % self.cap
            last = (oldest + rel + length - 1) % self.cap
            ok = (self.episode[first, lane] == self.episode[last, lane]) & (
                self.episode[first, lane] >= 0
            )
            k = int(ok.sum())
            lanes[got : got + k], starts[got : got + k] = lane[ok], first[ok]
            got += k
            if got == batch:
                break
        else:
            raise RuntimeError(
                "could not sample sequences inside one episode; episodes are shorter than the sequence length"
            )
        rows = (starts[:, None] + np.arange(length)[None, :]) % self.cap  # (B, T)
        cols = lanes[:, None]
        last = rows[:, -1]
        idx = np.concatenate([self.idx[rows, cols], self.next_idx[last, lanes][:, None]], axis=1)
        pos = np.concatenate([self.pos[rows, cols], self.next_pos[last, lanes][:, None]], axis=1)
        hidden = None
        if self.hidden is not None:
            hidden = torch.from_numpy(self.hidden[starts, lanes]).unsqueeze(0)
        return SequenceBatch(
            idx=idx,
            position=torch.from_numpy(pos),
            action=torch.from_numpy(self.action[rows, cols]),
            reward=torch.from_numpy(self.reward[rows, cols]),
            terminated=torch.from_numpy(self.terminated[rows, cols]),
            hidden=hidden,
        )
