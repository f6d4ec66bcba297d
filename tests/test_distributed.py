"""The DDP helpers in two real processes (gloo, forked), and as plain calls in one."""

import functools
import multiprocessing
import socket
import traceback

import pytest
import torch
from torch import nn

from conditioned_sep import distributed
from conditioned_sep.training import TrainConfig, build_model, separation_loss


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _in_two_processes(job, tmp_path) -> dict[int, tuple[str, object]]:
    """``job(rank, tmp_path)`` on ranks 0 and 1 of a gloo process group -> ``{rank: ("ok", result) or
    (error type, message)}``."""
    ctx = multiprocessing.get_context("fork")
    queue, port = ctx.Queue(), _port()

    def run(rank: int) -> None:
        torch.set_num_threads(1)  # two processes on a machine that may have two cores
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
        try:
            queue.put((rank, "ok", job(rank, tmp_path)))
        except Exception as err:
            queue.put((rank, type(err).__name__, f"{err}\n{traceback.format_exc()}"))
        finally:
            distributed.destroy()

    procs = [ctx.Process(target=run, args=(r,)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return {rank: (kind, value) for rank, kind, value in results}


def _collectives(rank, tmp_path):
    log = tmp_path / "order.txt"

    def first():
        with open(log, "a") as f:
            f.write(str(rank))
        return log.read_text()

    return {"world": distributed.world(), "flag": distributed.broadcast_flag(rank == 0),
            "sum": distributed.all_reduce_sum([float(rank), 1.0]), "value": distributed.on_rank0(lambda: 42),
            "order": distributed.rank0_first(first)}


def test_collectives_agree_across_two_processes(tmp_path):
    results = _in_two_processes(_collectives, tmp_path)
    assert all(kind == "ok" for kind, _ in results.values()), results
    zero, one = results[0][1], results[1][1]
    assert zero["world"] == (0, 2) and one["world"] == (1, 2)
    assert zero["flag"] is True and one["flag"] is True  # rank 0's flag everywhere
    assert zero["sum"] == one["sum"] == [1.0, 2.0]
    assert zero["value"] == 42 and one["value"] is None
    assert zero["order"] == "0" and one["order"] == "01"  # rank 0 ran first


def _refusal(rank, tmp_path):
    def check():
        raise ValueError("no track holds the stem 'bass'")

    distributed.on_rank0(check)
    return "went on"


def test_a_refusal_of_rank_0_stops_every_rank(tmp_path):
    results = _in_two_processes(_refusal, tmp_path)
    assert results[0][0] == "ValueError" and "no track holds the stem 'bass'" in results[0][1]
    assert results[1][0] == "RankZeroError" and "rank 0 stopped the run" in results[1][1]


def _loss_through_ddp(rank, tmp_path, *, arch):
    model = build_model(TrainConfig(arch=arch, preset="tiny")).eval()  # same seed: same weights on both ranks
    net = nn.parallel.DistributedDataParallel(model)
    assert distributed.unwrap(net) is model and distributed.unwrap(model) is model
    torch.manual_seed(rank)
    mixture, target = torch.randn(2, 2, 4000) * 0.1, torch.randn(2, 2, 4000) * 0.1
    z = torch.eye(4)[:2]
    wrapped, _ = separation_loss(net, mixture, target, z, wave_weight=0.5)
    wrapped.backward()
    plain, _ = separation_loss(model, mixture, target, z, wave_weight=0.5)
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return wrapped.item(), plain.item(), grads.tolist()  # plain data through the queue


@pytest.mark.parametrize("arch", ["unet", "bandsplit"])
def test_one_loss_through_a_distributed_wrapper(tmp_path, arch):
    results = _in_two_processes(functools.partial(_loss_through_ddp, arch=arch), tmp_path)
    assert all(kind == "ok" for kind, _ in results.values()), results
    for wrapped, plain, _ in (value for _, value in results.values()):
        assert wrapped == pytest.approx(plain, rel=1e-6)
    assert results[0][1][0] != pytest.approx(results[1][1][0])  # each rank its own batch...
    torch.testing.assert_close(torch.tensor(results[0][1][2]), torch.tensor(results[1][1][2]))  # same mean gradient


def test_helpers_are_plain_calls_in_one_process():
    assert distributed.world() == (0, 1)
    assert distributed.broadcast_flag(False) is False and distributed.all_reduce_sum([1.5]) == [1.5]
    assert distributed.on_rank0(lambda: "x") == "x" and distributed.rank0_first(lambda: 3) == 3
    with pytest.raises(ValueError, match="bad"):
        distributed.on_rank0(lambda: (_ for _ in ()).throw(ValueError("bad")))
    distributed.barrier()
    assert distributed.init("cpu") is False  # no WORLD_SIZE > 1: no process group started
