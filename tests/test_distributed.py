"""DDP over two CPU processes (gloo): both ranks take the same steps and end with the same weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    from chartrl.chart.spec import ChartSpec
    from chartrl.testing.synthetic import synthetic_candles
    from chartrl.train.distributed import DistInfo, cleanup, setup
    from chartrl.train.dqn import TrainConfig, train
    from chartrl.train.env import prepare_data

    spec = ChartSpec(window=40, height=32, width=48, ma_periods=(5, 10), bollinger_period=10)
    # Each rank sees other candles, so only gradient averaging can keep the weights equal.
    data = prepare_data(synthetic_candles(500, seed=5 + rank), spec, "1h", validation_fraction=0.2)
    cfg = TrainConfig(
        epochs=1,
        imitation_epochs=1,
        num_envs=2,
        learning_starts=8,
        batch_size=2,
        seq_len=3,
        burn_in=2,
        train_frequency=2,
        max_steps_per_epoch=10,
        buffer_size=200,
        policy_kwargs={"feat_dim": 16},
        seed=3,
    )
    meta = {
        "chart_spec": spec,
        "series": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"},
    }
    # Control run first: the same two processes, no process group.
    solo = train(
        "cnnrnn", data, cfg, Path(out) / f"solo{rank}", meta, dist=DistInfo(), progress=False
    )
    torch.save(solo.policy.state_dict(), Path(out) / f"solo{rank}.pt")
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
        }
    )
    info, device = setup("cpu")
    assert info.enabled and info.rank == rank
    result = train(
        "cnnrnn", data, cfg, Path(out) / "ddp", meta, device=device, dist=info, progress=False
    )
    torch.save(result.policy.state_dict(), Path(out) / f"ddp{rank}.pt")
    cleanup(info)


@pytest.mark.timeout(240)
def test_ddp_two_cpu_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    load = lambda name: torch.load(tmp_path / name, weights_only=True)  # noqa: E731
    ddp, solo = [load(f"ddp{r}.pt") for r in range(2)], [load(f"solo{r}.pt") for r in range(2)]
    assert ddp[0].keys() == ddp[1].keys()
    for k in ddp[0]:  # parameters and BatchNorm buffers alike
        torch.testing.assert_close(
            ddp[0][k], ddp[1][k], rtol=0, atol=0, msg=f"{k} differs between ranks"
        )
    assert (tmp_path / "ddp" / "model.json").is_file()  # rank 0 wrote the checkpoint
    # Control: without DDP the same ranks drift apart (what makes the check above able to fail).
    assert not torch.equal(solo[0]["out.weight"], solo[1]["out.weight"])
