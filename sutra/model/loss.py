"""Cross-entropy of the output head without materialising all fp32 logits.

For 4 x 8192 tokens and a 49,152 vocabulary the logits alone would be 6.4 GB in fp32. Here the
head matmul, log-softmax and both gradients are computed chunk by chunk in the forward pass
(the approach of Liger's fused linear cross-entropy), so only one chunk of logits exists at a
time and backward merely scales the stored gradients.
"""

import torch

IGNORE_INDEX = -100

_reused_logits: dict[torch.dtype, torch.Tensor] = {}


def _logits_into(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """h @ w.T. On a CPU, into one buffer kept between steps: glibc gives an allocation over 32 MB
    back to the OS when it is freed, so a fresh chunk of logits page-faults anew every step (a
    1024 x 49,152 head: 228 ms into a fresh tensor, 138 ms into a reused one). GPU allocators cache."""
    if h.device.type != "cpu" or (torch.is_grad_enabled() and (h.requires_grad or w.requires_grad)):
        return h @ w.t()  # (matmul into a buffer has no autograd)
    shape = (h.shape[0], w.shape[0])
    buffer = _reused_logits.get(h.dtype)
    # an inference tensor (made under torch.inference_mode, e.g. by evaluation) refuses writes outside it
    stale = buffer is not None and buffer.is_inference() and not torch.is_inference_mode_enabled()
    if buffer is None or stale or buffer.shape[1] != shape[1] or buffer.shape[0] < shape[0]:
        _reused_logits.pop(h.dtype, None)  # free the old one before the new one is allocated
        buffer = _reused_logits[h.dtype] = torch.empty(shape, dtype=h.dtype)
    return torch.matmul(h, w.t(), out=buffer[: shape[0]])


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size):
        dtype = _compute_dtype(hidden)
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(dtype)
            valid = targets != IGNORE_INDEX
            count = valid.sum().clamp(min=1).to(torch.float32)
            loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_hidden = torch.empty_like(hidden)
            grad_weight = None
            for start in range(0, hidden.shape[0], chunk_size):
                h = hidden[start : start + chunk_size].to(dtype)
                t = targets[start : start + chunk_size]
                ok = valid[start : start + chunk_size]
                # everything in place on the chunk's logits: on a CPU each fresh (rows x vocab)
                # tensor costs page faults, and each pass over it costs as much as a small matmul
                logits = _logits_into(h, w).float()
                safe_t = t.clamp(min=0)
                target_logit = logits.gather(1, safe_t[:, None])
                peak = logits.amax(dim=-1, keepdim=True)
                unnormalised = logits.sub_(peak).exp_()  # softmax x its row sum
                row_sum = unnormalised.sum(dim=-1, keepdim=True)
                loss = loss + ((peak + row_sum.log() - target_logit).squeeze(1) * ok).sum()
                # d(loss)/d(logits) = (softmax - onehot) / count, zero on ignored rows, formed in fp32
                # before the one rounding to the compute dtype: a confident token's (p - 1) is tiny,
                # and rounding softmax first, then subtracting the onehot, left it mostly rounding error
                unnormalised.scatter_add_(1, safe_t[:, None], -row_sum)  # row_sum x (softmax - onehot)
                factor = ok.to(torch.float32)[:, None] / (count * row_sum)
                # scaled and rounded in one pass (in place when the compute dtype is fp32)
                rounded = unnormalised if dtype == torch.float32 else torch.empty_like(unnormalised, dtype=dtype)
                grad = torch.mul(unnormalised, factor, out=rounded)
                grad_hidden[start : start + chunk_size] = (grad @ w).to(hidden.dtype)
                chunk_grad_weight = grad.t() @ h
                grad_weight = chunk_grad_weight.float() if grad_weight is None else grad_weight.add_(chunk_grad_weight)
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return loss / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss.to(grad_hidden.dtype), grad_weight * grad_loss.to(grad_weight.dtype), None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """Mean cross-entropy of softmax(hidden @ weight.T) against targets (IGNORE_INDEX skipped).

    hidden (N, d), weight (V, d), targets (N,): class ids in [0, V) or IGNORE_INDEX; other negative
    ids are not checked (a check would wait for the GPU every step). The mean is over the targets
    that are not ignored, and 0 when all are (F.cross_entropy gives NaN): a batch of nothing adds nothing."""
    if not (hidden.requires_grad or weight.requires_grad) or not torch.is_grad_enabled():
        return _eval_cross_entropy(hidden, weight, targets, chunk_size)
    return LinearCrossEntropy.apply(hidden, weight, targets, chunk_size)


def target_log_probs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int = 2048):
    """log softmax(hidden @ weight.T)[row, target] for every row, and whether the target is the row's
    argmax. hidden (N, d), weight (V, d), targets (N,) all valid ids.

    Chunk by chunk, with the log-softmax written over each chunk's logits: no second (rows x vocab)
    tensor. It is PyTorch's own log_softmax kernel, as lm-eval's `hf` model uses, so the sums agree
    with it to rounding (a hand-written logsumexp drifted by 3e-5 per token)."""
    dtype = _compute_dtype(hidden)
    log_probs, greedy = [], []
    with torch.autocast(hidden.device.type, enabled=False):
        w = weight.to(dtype)
        for start in range(0, hidden.shape[0], chunk_size):
            t = targets[start : start + chunk_size]
            logits = _logits_into(hidden[start : start + chunk_size].to(dtype), w).float()
            # in place when scoring (out= has no autograd)
            chunk_log_probs = torch.log_softmax(logits, dim=-1, out=None if logits.requires_grad else logits)
            log_probs.append(chunk_log_probs.gather(1, t[:, None])[:, 0])
            greedy.append(chunk_log_probs.argmax(dim=-1) == t)
    return torch.cat(log_probs), torch.cat(greedy)


def _eval_cross_entropy(hidden, weight, targets, chunk_size):
    valid = targets != IGNORE_INDEX
    log_probs, _ = target_log_probs(hidden, weight, targets.clamp(min=0), chunk_size)
    return -(log_probs * valid).sum() / valid.sum().clamp(min=1)
