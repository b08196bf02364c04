"""Budget arithmetic: boundary rule, shares, epochs, split ranges."""

from __future__ import annotations

import numpy as np
import pytest

from megatron_dlm.data.budget import (
    BudgetError,
    blend_budgets,
    budget_document_order,
    epochs_for_budget,
    proportional_shares,
    samples_per_epoch,
    select_budget_documents,
    split_document_range,
)

FIRST_WHOLE = dict(sample="first", boundary="whole")


def test_first_documents_with_the_boundary_document_whole():
    lengths = np.array([10, 20, 30, 40])
    assert select_budget_documents(lengths, 30, **FIRST_WHOLE).documents == 2  # fills 2 exactly
    budget = select_budget_documents(lengths, 31, **FIRST_WHOLE)
    assert (budget.documents, budget.tokens) == (3, 60)  # the boundary document comes whole
    assert budget.selected.tolist() == [0, 1, 2] and not budget.is_cut
    assert select_budget_documents(lengths, 1, **FIRST_WHOLE).documents == 1
    full = select_budget_documents(lengths, 100, **FIRST_WHOLE)
    assert (full.documents, full.tokens, full.available_tokens) == (4, 100, 100)


def test_cut_boundary_makes_the_count_exact():
    lengths = np.array([10, 20, 30, 40])
    budget = select_budget_documents(lengths, 31, sample="first", boundary="cut")
    assert (budget.documents, budget.tokens) == (3, 31)
    assert (budget.boundary_document, budget.boundary_tokens, budget.boundary_length) == (2, 1, 30)
    assert budget.is_cut and "the last cut to 1 of its 30 tokens" in budget.describe()
    exact = select_budget_documents(lengths, 30, sample="first", boundary="cut")
    assert (exact.documents, exact.tokens, exact.is_cut) == (2, 30, False)  # nothing to cut
    full = select_budget_documents(lengths, 100, sample="first", boundary="cut")
    assert (full.documents, full.tokens, full.is_cut) == (4, 100, False)


def test_random_draw_is_seeded_exact_and_nested():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 500, size=1000)
    order = budget_document_order(1000, sample="random", seed=5)
    assert sorted(order.tolist()) == list(range(1000)) and order.tolist() != list(range(1000))
    previous = set()
    for budget_tokens in (1, 999, 5_000, 40_000, 123_457, int(lengths.sum())):
        budget = select_budget_documents(
            lengths, budget_tokens, sample="random", boundary="cut", seed=5
        )
        kept = budget.selected.tolist()
        # the shortest run of the seeded order that holds the budget, the boundary document last
        assert sorted(order[: budget.documents].tolist()) == kept
        assert budget.boundary_document == order[budget.documents - 1]
        others = int(lengths[kept].sum()) - budget.boundary_length
        assert others < budget_tokens <= others + budget.boundary_length
        assert budget.tokens == others + budget.boundary_tokens == budget_tokens
        assert previous <= set(kept)  # a smaller budget's documents are part of a larger one's
        previous = set(kept)
    again = select_budget_documents(lengths, 40_000, sample="random", boundary="cut", seed=5)
    other = select_budget_documents(lengths, 40_000, sample="random", boundary="cut", seed=6)
    first = select_budget_documents(lengths, 40_000, sample="first", boundary="cut")
    drawn = select_budget_documents(lengths, 40_000, sample="random", boundary="cut", seed=5)
    assert np.array_equal(again.selected, drawn.selected)
    assert not np.array_equal(other.selected, drawn.selected)
    assert first.selected.tolist() == list(range(first.documents))
    assert drawn.selected.max() > 800 and drawn.selected.min() < 200  # spread over the split
    whole = select_budget_documents(lengths, 40_000, sample="random", boundary="whole", seed=5)
    assert np.array_equal(whole.selected, drawn.selected) and whole.tokens >= 40_000
    with pytest.raises(ValueError, match="needs a seed"):
        select_budget_documents(lengths, 10, sample="random", boundary="cut")


def test_blend_budgets_split_the_budget_and_draw_per_component():
    lengths = [np.full(100, 50), np.full(300, 50)]
    a, b = blend_budgets(
        lengths, 4_000, weights=[1, 3], sample="random", boundary="cut", seed=1, names="ab"
    )
    assert (a.requested_tokens, b.requested_tokens) == (1_000, 3_000) == (a.tokens, b.tokens)
    by_size = blend_budgets(
        lengths, 4_000, weights=None, sample="first", boundary="cut", seed=None, names="ab"
    )
    assert [x.tokens for x in by_size] == [1_000, 3_000]  # 1:3 by the components' tokens
    same = blend_budgets(
        [lengths[0], lengths[0]], 2_000, weights=None, sample="random", boundary="cut", seed=1,
        names="aa",
    )  # fmt: skip
    assert not np.array_equal(same[0].selected, same[1].selected)  # each draws its own sample


def test_budget_larger_than_the_data_says_so():
    with pytest.raises(BudgetError, match=r"--unique-tokens 101 is larger than the split x.*100"):
        select_budget_documents(np.array([50, 50]), 101, source="the split x", **FIRST_WHOLE)
    with pytest.raises(BudgetError, match="must be > 0"):
        select_budget_documents(np.array([50]), 0, **FIRST_WHOLE)


def test_proportional_shares_sum_exactly_and_follow_weights():
    assert proportional_shares(10, [1, 1, 1]) == [4, 3, 3]
    assert proportional_shares(1000, [0.7, 0.3]) == [700, 300]
    shares = proportional_shares(12_345_679, [0.5, 0.25, 0.25])
    assert sum(shares) == 12_345_679 and max(shares) - 2 * min(shares) <= 2
    with pytest.raises(ValueError, match="positive"):
        proportional_shares(10, [1, 0])


def test_epochs_for_budget():
    assert samples_per_epoch(2049, 2048) == 1 and samples_per_epoch(2048, 2048) == 0
    plan = epochs_for_budget(100 * 2048 + 1, seq_length=2048, train_tokens=150 * 100 * 2048)
    assert plan.samples_per_epoch == 100 and plan.train_samples == 15_000
    assert plan.epochs == 150.0 and plan.full_epochs == 150 and plan.last_epoch_samples == 0
    partial = epochs_for_budget(1001, seq_length=10, train_samples=250)
    assert (partial.full_epochs, partial.last_epoch_samples, partial.epochs) == (2, 50, 2.5)
    with pytest.raises(BudgetError, match="do not fill one sample"):
        epochs_for_budget(10, seq_length=10, train_samples=1)


def test_split_document_range():
    assert split_document_range(1000, "969,30,1", "train") == range(0, 969)
    assert split_document_range(1000, "969,30,1", "valid") == range(969, 999)
    assert split_document_range(1000, "969,30,1", "test") == range(999, 1000)
    assert split_document_range(10, "100,0,0", "valid") is None
    assert split_document_range(7, "1,1", "valid") == range(4, 7)  # round(3.5) == 4
