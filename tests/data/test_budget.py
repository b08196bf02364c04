"""Budget arithmetic: boundary rule, shares, epochs, split ranges."""

from __future__ import annotations

import numpy as np
import pytest

from megatron_dlm.data.budget import (
    BudgetError,
    epochs_for_budget,
    proportional_shares,
    samples_per_epoch,
    select_budget_documents,
    split_document_range,
)


def test_boundary_document_is_included_whole():
    lengths = np.array([10, 20, 30, 40])
    assert select_budget_documents(lengths, 30).documents == 2  # exactly fills 2 documents
    budget = select_budget_documents(lengths, 31)
    assert (budget.documents, budget.tokens) == (3, 60)  # the boundary document comes whole
    assert select_budget_documents(lengths, 1).documents == 1
    full = select_budget_documents(lengths, 100)
    assert (full.documents, full.tokens, full.available_tokens) == (4, 100, 100)


def test_budget_larger_than_the_data_says_so():
    with pytest.raises(BudgetError, match=r"--unique-tokens 101 is larger than the split x.*100"):
        select_budget_documents(np.array([50, 50]), 101, source="the split x")
    with pytest.raises(BudgetError, match="must be > 0"):
        select_budget_documents(np.array([50]), 0)


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
