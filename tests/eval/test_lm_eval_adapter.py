"""The lm-eval adapter on toy models with known answers: tokenization rules, greedy match,
chat templates, model_args errors."""

from __future__ import annotations

import pytest
import torch
from lm_eval.api.instance import Instance

from megatron_dlm.config import ConfigError
from megatron_dlm.eval.lm_eval_adapter import FALLBACK_CHAT_TEMPLATE, MegatronDLMEvalModel
from megatron_dlm.inference import InferenceModel, LikelihoodRequest

V, MASK, PAD, EOS = 12, 11, 0, 1
TABLE = torch.randn(V + 1, V + 1, V, generator=torch.Generator().manual_seed(4)) * 3
TABLE[..., [PAD, EOS, 10, MASK]] = -30.0  # predictions are letters (ids 2..9)


class CharTokenizer:
    """'a'.. -> 2.. (one token per character; ' ' is 10)."""

    def tokenize(self, text: str) -> list[int]:
        return [10 if c == " " else 2 + (ord(c) - ord("a")) % 8 for c in text]

    def detokenize(self, ids) -> str:
        return "".join(" " if i == 10 else chr(ord("a") + i - 2) for i in ids if 2 <= i <= 10)


def toy_dlm(tokens, valid):
    """Each position's logits depend on its neighbours, so the unmasking order matters."""
    b = tokens.shape[0]
    edge = torch.full((b, 1), V)
    left = torch.cat([edge, tokens[:, :-1]], dim=1).masked_fill(
        ~torch.cat([torch.zeros(b, 1, dtype=torch.bool), valid[:, :-1]], 1), V
    )
    right = torch.cat([tokens[:, 1:], edge], dim=1)
    return TABLE[left, right]


def toy_ar(tokens, valid):
    b = tokens.shape[0]
    left = torch.cat([torch.full((b, 1), V), tokens[:, :-1]], dim=1)
    return TABLE[tokens, left]


def _model(logits_fn, bidirectional=True) -> InferenceModel:
    return InferenceModel(
        logits_fn=logits_fn, tokenizer=CharTokenizer(), bidirectional=bidirectional,
        mask_id=MASK, eos_id=EOS, pad_id=PAD, vocab_size=V, max_length=32,
        device=torch.device("cpu"), source="megatron", path="/toy",
    )  # fmt: skip


def _adapter(logits_fn=toy_dlm, bidirectional=True, **kwargs) -> MegatronDLMEvalModel:
    kwargs.setdefault("mc_num", 4)
    return MegatronDLMEvalModel(inference_model=_model(logits_fn, bidirectional), **kwargs)


def greedy_unmask(context: list[int], n: int) -> list[int]:
    """LLaDA's greedy check, written out: n steps, each commits the most confident masked
    position's argmax."""
    seq = torch.tensor([context + [MASK] * n])
    for _ in range(n):
        logits = toy_dlm(seq, torch.ones_like(seq, dtype=torch.bool))[0].double()
        logits[:, MASK] = float("-inf")
        probs = torch.softmax(logits, -1)
        masked = (seq[0] == MASK).nonzero().flatten()
        best = probs[masked].max(-1)
        pick = masked[int(best.values.argmax())]
        seq[0, pick] = int(best.indices[int(best.values.argmax())])
    return seq[0, len(context) :].tolist()


def test_greedy_match_is_greedy_one_token_at_a_time_unmasking():
    context = [2, 3, 4]
    greedy = greedy_unmask(context, 4)
    other = [(greedy[0] - 1) % 8 + 2, *greedy[1:]]  # another letter first
    model = _model(toy_dlm)
    assert model.greedy_matches([LikelihoodRequest(context, greedy)]) == [True]
    assert model.greedy_matches([LikelihoodRequest(context, other)]) == [False]
    text_ctx, text_greedy = "abc", CharTokenizer().detokenize(greedy)
    text_other = CharTokenizer().detokenize(other)

    def request(continuation: str, doc: int, choice: int = 0) -> Instance:
        return Instance("loglikelihood", {}, (text_ctx, continuation), choice, ("t", doc, 1))

    # Two documents of a loglikelihood task (LAMBADA-style): each continuation is checked.
    results = _adapter().loglikelihood([request(text_greedy, 0), request(text_other, 1)])
    assert [g for _, g in results] == [True, False]
    # One multiple-choice document: "auto" skips the check (only exact_match would read it).
    choices = [request(text_greedy, 0, 0), request(text_other, 0, 1)]
    assert [g for _, g in _adapter().loglikelihood(choices)] == [False, False]
    checked = _adapter(check_greedy="true").loglikelihood(choices)
    assert [g for _, g in checked] == [True, False]
    assert _adapter(check_greedy="false").loglikelihood([request(text_greedy, 0)])[0][1] is False
    # The likelihood does not depend on whether the check ran.
    assert checked[0][0] == pytest.approx(results[0][0])


def test_trailing_context_whitespace_moves_to_the_continuation():
    seen: list[LikelihoodRequest] = []
    adapter = _adapter(toy_ar, bidirectional=False)
    original = adapter.model.score

    def recording(requests, **kwargs):
        seen.extend(requests)
        return original(requests, **kwargs)

    adapter.model.score = recording
    adapter.loglikelihood([Instance("loglikelihood", {}, ("ab ", "cd"), 0),
                           Instance("loglikelihood", {}, ("", "cd"), 0)])  # fmt: skip
    space = CharTokenizer().tokenize(" ")[0]
    assert seen[0] == LikelihoodRequest([2, 3], [space, 4, 5])
    assert seen[1] == LikelihoodRequest([EOS], [4, 5])  # an empty context: lm-eval's prefix token


def test_ar_likelihood_is_exact_and_greedy_is_the_argmax():
    adapter = _adapter(toy_ar, bidirectional=False)
    ctx = [2, 3]
    seq = list(ctx)
    for _ in range(3):
        row = torch.tensor([seq])
        seq.append(int(toy_ar(row, torch.ones_like(row, dtype=torch.bool))[0, -1].argmax()))
    continuation = CharTokenizer().detokenize(seq[2:])
    ((value, greedy),) = adapter.loglikelihood(
        [Instance("loglikelihood", {}, ("ab", continuation), 0)]
    )
    assert greedy is True and value < 0


def test_chat_templates():
    adapter = _adapter()
    chat = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"}]  # fmt: skip
    assert adapter.chat_template(True) == FALLBACK_CHAT_TEMPLATE
    assert adapter.apply_chat_template(chat) == "Q1\n\nA1\n\nQ2\n\n"
    assert adapter.apply_chat_template(chat, add_generation_prompt=False) == "Q1\n\nA1\n\nQ2"
    template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    custom = _adapter(chat_template=template)
    assert custom.apply_chat_template(chat[:2]) == "<user>Q1<assistant>A1"
    assert custom.tokenizer_name != adapter.tokenizer_name


def test_generate_until_cuts_at_stop_strings_and_follows_the_task_budget():
    adapter = _adapter(block_length=4, gen_length=8)
    options = adapter._options({"max_gen_toks": 6, "do_sample": False})
    assert (options.gen_length, options.block_length, options.temperature) == (8, 4, 0.0)
    (text,) = adapter.generate_until(
        [Instance("generate_until", {}, ("abc", {"until": ["b"], "max_gen_toks": 4}), 0)]
    )
    assert "b" not in text and len(text) <= 4


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(mc_nm=3), "unknown model_args mc_nm"), (dict(cache="full"), "--cache"),
     (dict(block_length=0), "block_length"), (dict(mc_num=0), "mc_num"),
     (dict(check_greedy="sometimes"), "check_greedy")],
)  # fmt: skip
def test_bad_model_args_are_clear_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _adapter(**kwargs)
