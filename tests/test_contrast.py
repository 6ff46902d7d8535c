"""Pixel contrast: projection head, ring-buffer class queues, anchor sampling, supervised InfoNCE."""

import math
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vidseg.models.contrast import ClassQueues, PixelContrastLoss, ProjectionHead

TAU, BASE = 0.1, 0.07


def _unit(theta):
    return torch.tensor([math.cos(theta), math.sin(theta)])


def _image(vectors):
    """`(1, D, 1, n)` embedding map from n column vectors."""
    return torch.stack(vectors, 1)[None, :, None, :]


def _formula(anchors, a_lab, contrast, c_lab, exclude_self):
    """The per-anchor loss written term by term (no vectorisation, no chunking)."""
    losses = []
    for i in range(anchors.shape[0]):
        s = [float(anchors[i] @ contrast[j]) / TAU for j in range(contrast.shape[0])]
        pos = [j for j in range(len(s)) if c_lab[j] == a_lab[i] and not (exclude_self and j == i)]
        neg = [j for j in range(len(s)) if c_lab[j] != a_lab[i]]
        if not pos:
            continue
        neg_sum = sum(math.exp(s[j]) for j in neg)
        terms = [s[p] - math.log(math.exp(s[p]) + neg_sum) for p in pos]
        losses.append(-(TAU / BASE) * sum(terms) / len(terms))
    return sum(losses) / len(losses)


def test_projection_head_is_unit_norm():
    head = ProjectionHead(6, 16)
    with torch.no_grad():
        out = head(torch.randn(2, 6, 5, 3))
    assert out.shape == (2, 16, 5, 3)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 5, 3), atol=1e-5)


def test_queues_wrap_around_exact_entries_and_pointers():
    q = ClassQueues(num_classes=2, size=3, dim=2, pixels_per_image=2)
    u = {t: _unit(0.3 * t) for t in range(1, 5)}  # class 0 embedding at step t
    w = {t: _unit(2.0 + 0.3 * t) for t in range(1, 5)}  # class 1 embedding at step t
    steps = [[0, 0, 1, 255], [0, 0, 1, 1], [0, 0, 0, 255], [1, 1, 1, 0]]
    rng_before = torch.get_rng_state()
    for t, labels in enumerate(steps, start=1):
        emb = _image(
            [u[t] if c == 0 else w[t] if c == 1 else torch.tensor([5.0, 5.0]) for c in labels]
        )
        q.enqueue(emb, torch.tensor([labels]).view(1, 1, 4))
        if t == 1:
            assert q.pixel_ptr.tolist() == [2, 1] and q.pixel_fill.tolist() == [2, 1]
            assert q.segment_ptr.tolist() == [1, 1] and q.segment_fill.tolist() == [1, 1]
    assert torch.equal(torch.get_rng_state(), rng_before)  # private generator only

    def same(queue, rows):
        return torch.allclose(queue, torch.stack(rows), atol=1e-6)

    # class 0: segments written at 0,1,2,0; pixels 2+2+2+1 = 7 writes at 0,1 | 2,0 | 1,2 | 0
    assert same(q.segment_queue[0], [u[4], u[2], u[3]]) and q.segment_ptr[0] == 1
    assert same(q.pixel_queue[0], [u[4], u[3], u[3]]) and q.pixel_ptr[0] == 7 % 3
    # class 1 (absent at step 3): segments at 0,1,2; pixels 1+2+0+2 = 5 writes at 0 | 1,2 | 0,1
    assert same(q.segment_queue[1], [w[1], w[2], w[4]]) and q.segment_ptr[1] == 0
    assert same(q.pixel_queue[1], [w[4], w[4], w[2]]) and q.pixel_ptr[1] == 5 % 3
    assert q.segment_fill.tolist() == [3, 3] and q.pixel_fill.tolist() == [3, 3]
    emb, lab = q.contents()
    assert emb.shape == (12, 2) and lab.tolist() == [0] * 3 + [1] * 3 + [0] * 3 + [1] * 3


def test_queue_write_longer_than_size_keeps_a_consistent_ring():
    q = ClassQueues(num_classes=1, size=3, dim=2, pixels_per_image=5)
    vecs = [_unit(0.5 * i) for i in range(5)]
    q.enqueue(_image(vecs), torch.zeros(1, 1, 5, dtype=torch.long))
    assert q.pixel_ptr.tolist() == [5 % 3] and q.pixel_fill.tolist() == [3]
    stored = q.pixel_queue[0]
    matches = [[bool(torch.allclose(row, v, atol=1e-6)) for v in vecs] for row in stored]
    assert all(sum(m) == 1 for m in matches) and len({m.index(True) for m in matches}) == 3
    mean = F.normalize(torch.stack(vecs).mean(0), dim=0)
    assert torch.allclose(q.segment_queue[0, 0], mean, atol=1e-6) and q.segment_fill.tolist() == [1]


def test_queues_are_seeded_and_the_position_is_checkpointed():
    emb, lab = torch.randn(2, 4, 3, 3), torch.randint(0, 3, (2, 3, 3))
    a, b = (
        ClassQueues(3, size=5, dim=4, pixels_per_image=2),
        ClassQueues(3, size=5, dim=4, pixels_per_image=2),
    )
    a.enqueue(emb, lab)
    b.load_state_dict(a.state_dict())
    a.enqueue(emb, lab)
    b.enqueue(emb, lab)
    assert torch.equal(a.pixel_queue, b.pixel_queue) and int(a.rng.draws) == 2


def _two_image_case():
    """2 images x classes {0, 1} x 2 identical pixels; max_views=1 -> one anchor per (image, class)."""
    ea, eb, ec, ed = _unit(0.1), _unit(1.9), _unit(0.7), _unit(2.6)
    emb = torch.cat([_image([ea, ea, eb, eb]), _image([ec, ec, ed, ed])])
    labels = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]]).view(2, 1, 4)
    return emb, labels, torch.stack([ea, eb, ec, ed]), torch.tensor([0, 1, 0, 1])


def test_in_batch_loss_matches_hand_formula():
    emb, labels, anchors, a_lab = _two_image_case()
    loss_fn = PixelContrastLoss(2, temperature=TAU, base_temperature=BASE, max_views=1)
    loss = loss_fn(emb.requires_grad_(), labels, labels)
    expected = _formula(anchors, a_lab, anchors, a_lab, exclude_self=True)
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    # spelled out for anchor a: one positive c, negatives b and d
    s = lambda x, y: float(x @ y) / TAU  # noqa: E731
    ea, eb, ec, ed = anchors
    la = -(TAU / BASE) * (
        s(ea, ec) - math.log(math.exp(s(ea, ec)) + math.exp(s(ea, eb)) + math.exp(s(ea, ed)))
    )
    assert math.isclose(_formula(anchors[:1], a_lab[:1], anchors, a_lab, True), la, rel_tol=1e-9)


def test_queue_loss_matches_formula_and_chunking_is_exact():
    torch.manual_seed(0)
    queues = ClassQueues(3, size=4, dim=8, pixels_per_image=3)
    for _ in range(3):
        queues.enqueue(F.normalize(torch.randn(2, 8, 4, 4), dim=1), torch.randint(0, 3, (2, 4, 4)))
    emb = F.normalize(torch.randn(2, 8, 4, 4), dim=1)
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[:, :, 2:] = 1
    labels[1, 0] = 2
    grads, values = [], []
    for chunk in (1000, 3):
        x = emb.clone().requires_grad_()
        fn = PixelContrastLoss(
            3, temperature=TAU, base_temperature=BASE, max_views=3, queues=queues, chunk_size=chunk
        )
        loss = fn(x, labels, labels)
        loss.backward()
        values.append(loss.item())
        grads.append(x.grad)
        idx, a_lab = PixelContrastLoss(3, max_views=3).sample_anchors(
            labels, labels
        )  # same seed, same picks
        anchors = emb.permute(0, 2, 3, 1).reshape(-1, 8)[idx]
        contrast, c_lab = queues.contents()
        assert math.isclose(
            values[-1], _formula(anchors, a_lab, contrast, c_lab, False), rel_tol=1e-5
        )
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    half = ClassQueues(3, size=4, dim=8, pixels_per_image=3, dtype=torch.float16)
    half.load_state_dict(queues.state_dict())
    fn = PixelContrastLoss(3, temperature=TAU, base_temperature=BASE, max_views=3, queues=half)
    assert half.pixel_queue.dtype == torch.float16
    assert math.isclose(fn(emb, labels, labels).item(), values[0], rel_tol=1e-2)


def test_sampling_takes_hard_pixels_first_and_skips_small_classes():
    fn = PixelContrastLoss(3, max_views=3, max_samples=1024)
    labels = torch.zeros(1, 1, 8, dtype=torch.long)
    labels[0, 0, 6:] = 2  # class 2 has only 2 <= max_views pixels: no anchors
    for hard_pos, want_hard in (([5], 1), ([1, 4], 2), ([0, 1, 2, 3, 4, 5], 3)):
        pred = labels.clone()
        pred[0, 0, hard_pos] = 1
        for _ in range(5):
            idx, cls = fn.sample_anchors(labels, pred)
            assert idx.numel() == 3 and cls.tolist() == [0, 0, 0]
            assert len(set(idx.tolist()) & set(hard_pos)) == want_hard


def test_nothing_to_sample_or_no_positive_gives_zero_with_gradient():
    fn = PixelContrastLoss(2, max_views=1)
    emb = F.normalize(torch.randn(1, 4, 2, 2), dim=1).requires_grad_()
    for labels in (torch.full((1, 2, 2), 255), torch.tensor([[[0, 0], [1, 1]]])):
        loss = fn(emb, labels, labels)  # second case: one anchor per class, nobody has a positive
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(emb.grad).all()
    empty_bank = PixelContrastLoss(2, max_views=1, queues=ClassQueues(2, size=4, dim=4))
    assert (
        empty_bank(
            emb, torch.tensor([[[0, 0], [1, 1]]]), torch.zeros(1, 2, 2, dtype=torch.long)
        ).item()
        == 0.0
    )


def test_optimising_embeddings_decreases_the_loss():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 1, 1)).expand(2, 6, 6).clone()
    labels[:, :3] = (labels[:, :3] + 1) % 3
    raw = torch.randn(2, 8, 6, 6, requires_grad=True)
    fn = PixelContrastLoss(3, max_views=4, max_samples=64)
    opt = torch.optim.Adam([raw], lr=0.2)
    losses = []
    for _ in range(30):
        loss = fn(F.normalize(raw, dim=1), labels, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5]), losses


def _ddp_batches():
    gen = torch.Generator().manual_seed(7)
    return [
        (torch.randn(4, 4, 3, 3, generator=gen), torch.randint(0, 3, (4, 3, 3), generator=gen))
        for _ in range(2)
    ]


def _enqueue_all(batches):
    q = ClassQueues(3, size=4, dim=4, pixels_per_image=2, seed=5)
    for emb, lab in batches:
        q.enqueue(emb, lab)
    return {k: v for k, v in q.state_dict().items()}


def _ddp_worker(rank, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        half = [
            (e[2 * rank : 2 * rank + 2], lab[2 * rank : 2 * rank + 2]) for e, lab in _ddp_batches()
        ]
        torch.save(_enqueue_all(half), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_enqueue_the_gathered_batch(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = _enqueue_all(_ddp_batches())
    assert int(single["pixel_fill"].sum()) > 0
    for key, value in single.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        assert torch.allclose(ranks[0][key].float(), value.float(), atol=1e-6), key
