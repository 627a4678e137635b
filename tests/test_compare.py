"""Comparison metrics and failure classes, on small arrays whose answers can be worked out by hand."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from mnn_parity.comparison import compare_output
from mnn_parity.comparison.criteria import judge_case as judge
from mnn_parity.comparison.metrics import DEAD_ZERO_ABS, REL_FLOOR, cosine, is_flat, measure
from mnn_parity.manifest.spec import TopK
from mnn_parity.records import FailureClass, OutputComparison
from mnn_parity.manifest.tolerance import Tolerance

LOOSE = Tolerance(atol=1e-4, rtol=1e-3, cosine_min=0.0, mismatch_max=1.0)   # isolates top-k from other checks


def f32(*values):
    return np.array(values, dtype=np.float32)


# --- metrics -----------------------------------------------------------------------------------------------------

def test_metrics_by_hand():
    ref = np.array([1.0, 2.0, -4.0, 0.5])
    mnn = np.array([1.0, 2.5, -4.0, 0.25])
    c = compare_output("y", ref, mnn, Tolerance(atol=0.1, rtol=0.1))
    # |d| = [0, .5, 0, .25]; limits atol + rtol|ref| = [.2, .3, .5, .15] → elements 1 and 3 are outside.
    assert c.max_abs == 0.5
    assert c.mean_abs == pytest.approx(0.1875, abs=0)
    assert c.max_rel == 0.5            # 0.25 / 0.5
    assert c.mismatch_fraction == 0.5
    expected_cos = 22.125 / math.sqrt(21.25 * 23.3125)
    assert c.cosine == pytest.approx(expected_cos, rel=1e-14)
    assert (c.ref_shape, c.mnn_shape, c.ref_dtype, c.mnn_dtype) == ((4,), (4,), "float64", "float64")
    assert c.failure_class is FailureClass.OUT_OF_TOLERANCE
    assert c.reason == (f"50% of elements differ by more than atol 0.1 + rtol 0.1 x |reference|; worst at [1]: MNN 2.5 "
                        f"vs reference 2 (max abs 5.0e-01, cosine {expected_cos:.5f})")
    assert not c.passed


def test_identical_outputs_pass_with_zero_error():
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4)
    c = compare_output("y", x, x.copy(), Tolerance())
    assert (c.max_abs, c.max_rel, c.mean_abs, c.mismatch_fraction, c.cosine) == (0.0, 0.0, 0.0, 0.0, 1.0)
    assert c.passed and c.reason == ""
    assert c.topk_agreement is None


def test_computation_is_float64_not_the_outputs_dtype():
    # In float16, 1 + 1e-4 rounds to 1: a float16 subtraction would report zero error.
    ref = np.array([1.0, 2.0], dtype=np.float16)
    mnn = np.array([1.0, 2.0], dtype=np.float32) + np.float32(1e-4)
    c = compare_output("y", ref, mnn, Tolerance())
    assert c.max_abs == pytest.approx(1e-4, rel=1e-3)
    assert (c.ref_dtype, c.mnn_dtype) == ("float16", "float32")


def test_relative_error_uses_a_floor_where_the_reference_is_zero():
    c = compare_output("y", np.array([0.0, 1.0]), np.array([1e-3, 1.0]), Tolerance(atol=1e-4))
    assert c.max_rel == pytest.approx(1e-3 / 1e-4)          # the floor is atol where the reference is ~0
    exact = compare_output("y", np.array([0.0, 1.0]), np.array([1e-3, 1.0]), Tolerance(atol=0.0))
    assert exact.max_rel == pytest.approx(1e-3 / REL_FLOOR)  # atol 0: float32's smallest normal keeps it finite
    assert math.isfinite(c.max_rel)


def test_within_atol_plus_rtol_is_not_a_mismatch():
    ref = np.array([100.0, 0.0])
    mnn = np.array([100.0 + 0.1, 0.0])   # 0.1 <= 1e-4 + 1e-3 * 100 = 0.1001
    c = compare_output("y", ref, mnn, Tolerance())
    assert c.mismatch_fraction == 0.0
    assert c.passed


# --- cosine ------------------------------------------------------------------------------------------------------

def test_cosine_special_cases():
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine(np.zeros(3), np.ones(3)) == 0.0
    assert cosine(np.ones(3), np.zeros(3)) == 0.0
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 0.0
    assert cosine(np.array([1.0, 2.0]), np.array([-1.0, -2.0])) == -1.0
    # The squares of 1e200 overflow float64; scaling first keeps the answer.
    assert cosine(np.array([1e200, 1e200]), np.array([2e200, 2e200])) == pytest.approx(1.0)
    assert cosine(np.array([1e-200, 0.0]), np.array([1e-200, 1e-200])) == pytest.approx(math.sqrt(0.5))


def test_identical_outputs_have_a_cosine_of_exactly_one():
    x = np.random.default_rng(7).standard_normal((3, 50, 7)).astype(np.float32)
    assert cosine(x, x.copy()) == 1.0
    assert compare_output("y", x, x.copy(), Tolerance(cosine_min=1.0)).passed


def test_both_all_zero_outputs_pass():
    c = compare_output("y", np.zeros(5, np.float32), np.zeros(5, np.float32), Tolerance())
    assert c.cosine == 1.0 and c.passed


def test_cosine_only_failure_names_cosine():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    mnn = np.array([1.0, 2.0, 3.0, 3.0])   # one element off: allowed by mismatch_max, not by cosine_min
    c = compare_output("y", ref, mnn, Tolerance(mismatch_max=0.5, cosine_min=0.9999))
    assert c.mismatch_fraction == 0.25
    assert c.cosine < 0.9999
    assert c.failure_class is FailureClass.OUT_OF_TOLERANCE
    assert c.reason.startswith(f"cosine {c.cosine:.5f} < 0.9999")


def test_cosine_is_not_judged_inside_the_absolute_noise_floor():
    # Direction is meaningless for values far below atol (DESIGN §2: degenerate inputs).
    c = compare_output("y", np.array([1e-6, -1e-6]), np.array([-1e-6, 1e-6]), Tolerance())
    assert c.cosine == -1.0
    assert c.mismatch_fraction == 0.0
    assert c.passed


# --- shape -------------------------------------------------------------------------------------------------------

def test_shape_mismatch_reports_both_shapes_and_no_metrics():
    ref = np.zeros((1, 3, 416, 416), np.float32)
    mnn = np.zeros((1, 416, 416, 3), np.float32)     # NHWC for NCHW: elements cannot be paired
    c = compare_output("images", ref, mnn, Tolerance())
    assert c.failure_class is FailureClass.SHAPE_MISMATCH
    assert (c.ref_shape, c.mnn_shape) == ((1, 3, 416, 416), (1, 416, 416, 3))
    assert c.reason == "shape (1, 416, 416, 3) vs reference (1, 3, 416, 416)"
    assert c.max_abs is None and c.cosine is None and c.mismatch_fraction is None
    # a unit axis moved (1, 3 -> 3, 1) keeps the element order: judged on the values, as a layout difference
    moved = compare_output("images", ref, np.zeros((3, 1, 416, 416), np.float32), Tolerance())
    assert moved.failure_class is FailureClass.OUTPUT_LAYOUT and moved.max_abs == 0.0


def test_same_size_different_shape_is_still_a_mismatch():
    c = compare_output("y", np.zeros((2, 3)), np.zeros((3, 2)), Tolerance())
    assert c.failure_class is FailureClass.SHAPE_MISMATCH


# --- non-finite ----------------------------------------------------------------------------------------------------

def test_nan_and_inf_only_in_mnn_fail_as_nan_inf():
    c = compare_output("y", f32(1, 2, 3, 4), f32(np.nan, 2, np.inf, 4), Tolerance())
    assert (c.nan_ref, c.inf_ref, c.nan_mnn, c.inf_mnn) == (0, 0, 1, 1)
    assert c.failure_class is FailureClass.NAN_INF
    assert c.reason == "2 non-finite where the reference is finite (NaN 1, Inf 1)"
    # metrics stay meaningful on the finite positions
    assert c.max_abs == 0.0
    assert c.mismatch_fraction == 0.5


def test_nan_at_the_same_positions_on_both_sides_is_not_a_failure():
    ref = f32(np.nan, 1, 2, -np.inf)
    mnn = f32(np.nan, 1, 2, -np.inf)
    c = compare_output("y", ref, mnn, Tolerance())
    assert (c.nan_ref, c.nan_mnn, c.inf_ref, c.inf_mnn) == (1, 1, 1, 1)
    assert c.mismatch_fraction == 0.0
    assert c.cosine == 1.0
    assert c.passed


def test_inf_of_opposite_sign_is_a_mismatch_not_nan_inf():
    c = compare_output("y", f32(np.inf, 1, 2, 3), f32(-np.inf, 1, 2, 3), Tolerance())
    assert c.mismatch_fraction == 0.25
    assert c.failure_class is FailureClass.OUT_OF_TOLERANCE


def test_nan_only_in_the_reference_is_a_mismatched_element():
    c = compare_output("y", f32(np.nan, 1, 2, 3), f32(0, 1, 2, 3), Tolerance())
    assert c.nan_ref == 1 and c.nan_mnn == 0
    assert c.mismatch_fraction == 0.25
    assert c.failure_class is FailureClass.OUT_OF_TOLERANCE


# --- dead output -----------------------------------------------------------------------------------------------------

def test_denormal_garbage_is_a_dead_output():
    # The DESIGN §2 example: a tensor read before MNN copied it to host.
    ref = f32(1.17, -0.91)
    mnn = f32(4.17e-38, 0.0)
    c = compare_output("logits", ref, mnn, Tolerance())
    assert float(np.abs(mnn).max()) <= DEAD_ZERO_ABS
    assert c.failure_class is FailureClass.DEAD_OUTPUT
    assert c.reason.startswith("all zero (max |x| 4.17e-38)")
    assert "[-0.91, 1.17]" in c.reason


def test_constant_output_against_a_varying_reference_is_dead():
    c = compare_output("p", f32(0.2, 0.5, 0.3), f32(0.33, 0.33, 0.33), Tolerance())
    assert c.failure_class is FailureClass.DEAD_OUTPUT
    assert c.reason.startswith("constant 0.33")


def test_constant_output_within_tolerance_of_a_nearly_constant_reference_is_not_dead():
    ref = np.array([1.0, 1.0 + 1e-7, 1.0])
    c = compare_output("p", ref, np.ones(3), Tolerance())
    assert c.passed


def test_zero_output_against_a_constant_nonzero_reference_is_out_of_tolerance_not_dead():
    c = compare_output("y", np.full(4, 2.0), np.zeros(4), Tolerance())
    assert c.failure_class is FailureClass.OUT_OF_TOLERANCE


def test_nan_inf_outranks_dead_output():
    c = compare_output("y", f32(1.0, -1.0, 0.5), f32(0.0, 0.0, np.nan), Tolerance())
    assert c.failure_class is FailureClass.NAN_INF


# --- top-k -----------------------------------------------------------------------------------------------------------

def test_real_flip_and_near_ties_are_counted_apart():
    ref = np.array([[0.6, 0.4],      # real flip: gap 0.2 > limit 7e-4 and > max error 0.11
                    [0.5, 0.4996],   # near tie by tolerance: gap 4e-4 <= 1e-4 + 1e-3*0.5
                    [0.5, 0.49],     # near tie by error: gap 0.01 <= max error 0.02
                    [0.1, 0.9]])     # agrees
    mnn = np.array([[0.49, 0.51],
                    [0.4997, 0.5],
                    [0.48, 0.495],
                    [0.1, 0.9]])
    c = compare_output("cls", ref, mnn, LOOSE, TopK(k=1, axis=1))
    assert c.topk_flips == 1
    assert c.near_tie_flips == 2
    assert c.topk_agreement == 0.25
    assert c.failure_class is FailureClass.TOPK_FLIP
    assert c.reason == "top-1 flipped at 1 of 4 positions along axis 1 (2 near-tie flips ignored)"


def test_near_tie_flips_alone_do_not_fail():
    ref = np.array([[0.5, 0.4996], [0.1, 0.9]])
    mnn = np.array([[0.4997, 0.5], [0.1, 0.9]])
    c = compare_output("cls", ref, mnn, LOOSE, TopK(k=1, axis=-1))
    assert (c.topk_flips, c.near_tie_flips, c.topk_agreement) == (0, 1, 0.5)
    assert c.passed


def test_topk_on_another_axis_matches_the_transposed_case():
    ref = np.array([[0.6, 0.4], [0.5, 0.4996], [0.1, 0.9]])
    mnn = np.array([[0.49, 0.51], [0.4997, 0.5], [0.1, 0.9]])
    a = compare_output("cls", ref, mnn, LOOSE, TopK(k=1, axis=1))
    b = compare_output("cls", ref.T, mnn.T, LOOSE, TopK(k=1, axis=0))
    assert (a.topk_flips, a.near_tie_flips, a.topk_agreement) == (b.topk_flips, b.near_tie_flips, b.topk_agreement)
    assert (a.topk_flips, a.near_tie_flips) == (1, 1)


def test_top2_compares_sets_and_checks_the_boundary_gap():
    ref = np.array([[0.5, 0.3, 0.2, 0.0]])
    # Same top-2 set in a different order: agreement, no flip.
    same = compare_output("s", ref, np.array([[0.3, 0.5, 0.2, 0.0]]), LOOSE, TopK(k=2))
    assert (same.topk_agreement, same.topk_flips, same.near_tie_flips) == (1.0, 0, 0)
    # Class 2 replaces class 1: gap 0.3-0.2 = 0.1, max error 0.11 → near tie.
    tie = compare_output("s", ref, np.array([[0.5, 0.19, 0.31, 0.0]]), LOOSE, TopK(k=2))
    assert (tie.topk_agreement, tie.topk_flips, tie.near_tie_flips) == (0.0, 0, 1)
    # Same swap with a max error of 0.06 < 0.1: a real flip.
    real = compare_output("s", ref, np.array([[0.5, 0.24, 0.26, 0.0]]), LOOSE, TopK(k=2))
    assert (real.topk_agreement, real.topk_flips, real.near_tie_flips) == (0.0, 1, 0)
    assert real.failure_class is FailureClass.TOPK_FLIP


def test_out_of_tolerance_outranks_topk_flip():
    ref = np.array([[0.6, 0.4]])
    mnn = np.array([[0.49, 0.51]])
    c = compare_output("cls", ref, mnn, Tolerance(), TopK())
    assert c.topk_flips == 1
    assert c.failure_class is FailureClass.OUT_OF_TOLERANCE


# --- integer and bool outputs ---------------------------------------------------------------------------------------

def test_integer_outputs_compare_exactly_with_zero_tolerance():
    ref = np.array([1, 2, 3, 4], dtype=np.int64)
    mnn = np.array([1, 2, 3, 5], dtype=np.int32)   # MNN returns int32 where ONNX says int64 (DESIGN §3)
    c = compare_output("ids", ref, mnn, Tolerance(atol=0, rtol=0, cosine_min=0.0))
    assert (c.ref_dtype, c.mnn_dtype) == ("int64", "int32")
    assert (c.max_abs, c.mean_abs, c.mismatch_fraction) == (1.0, 0.25, 0.25)
    assert c.max_rel == 0.25
    assert c.failure_class is FailureClass.OUT_OF_TOLERANCE
    ok = compare_output("ids", ref, ref.astype(np.int32), Tolerance(atol=0, rtol=0))
    assert ok.passed and ok.max_abs == 0.0


def test_all_zero_argmax_is_dead():
    c = compare_output("argmax", np.array([3, 1, 4, 1], np.int64), np.zeros(4, np.int32), Tolerance())
    assert c.failure_class is FailureClass.DEAD_OUTPUT


def test_a_flat_integer_output_that_is_mostly_right_is_a_tie_break_not_a_dead_output():
    tie = compare_output("ids", np.array([0, 1], np.int64), np.zeros(2, np.int32), Tolerance(atol=0, rtol=0))
    assert tie.failure_class is FailureClass.OUT_OF_TOLERANCE and "worst at [1]: MNN 0 vs reference 1" in tie.reason
    # the same flat output in float is a dead layer
    dead = compare_output("p", np.array([0.0, 1.0], np.float32), np.zeros(2, np.float32), Tolerance(atol=0, rtol=0))
    assert dead.failure_class is FailureClass.DEAD_OUTPUT


def test_the_worst_element_is_located_in_the_output_shape_past_non_finite_positions():
    ref = np.array([[np.nan, 1.0, 2.0], [3.0, 4.0, 5.0]])
    mnn = np.array([[np.nan, 1.0, 2.0], [3.0, 4.5, 5.1]])
    c = compare_output("y", ref, mnn, Tolerance(atol=0.01, rtol=0.0))
    assert "worst at [1, 1]: MNN 4.5 vs reference 4" in c.reason


def test_bool_outputs():
    c = compare_output("mask", np.array([True, False, True]), np.array([True, True, True]), Tolerance(atol=0, rtol=0))
    assert c.mismatch_fraction == pytest.approx(1 / 3)
    assert not c.passed


def test_non_numeric_outputs_are_refused():
    with pytest.raises(TypeError, match="cannot compare"):
        compare_output("s", np.array(["a"]), np.array(["a"]), Tolerance())


def test_scalar_and_empty_outputs():
    s = compare_output("n", np.array(3.0), np.array(3.0), Tolerance(), TopK())
    assert s.passed and s.topk_agreement is None and s.ref_shape == ()
    e = compare_output("e", np.zeros((0, 4)), np.zeros((0, 4)), Tolerance())
    assert e.passed and e.mismatch_fraction == 0.0


# --- judge ---------------------------------------------------------------------------------------

def _fail(name: str, cls: FailureClass) -> OutputComparison:
    return OutputComparison(name=name, ref_shape=(1,), mnn_shape=(1,), ref_dtype="float32", mnn_dtype="float32",
                            tolerance=Tolerance(), failure_class=cls, reason=f"{cls.value} detail")


def test_judge_picks_the_most_fundamental_class_and_names_the_output():
    outs = [_fail("a", FailureClass.TOPK_FLIP), _fail("b", FailureClass.OUT_OF_TOLERANCE),
            _fail("c", FailureClass.NAN_INF), _fail("d", FailureClass.DEAD_OUTPUT)]
    cls, reason = judge(outs)
    assert cls is FailureClass.NAN_INF
    assert reason == "c: nan-inf detail (+3 more failing outputs)"
    cls, reason = judge([_fail("x", FailureClass.OUT_OF_TOLERANCE), _fail("y", FailureClass.SHAPE_MISMATCH)])
    assert cls is FailureClass.SHAPE_MISMATCH and reason == "y: shape-mismatch detail (+1 more failing output)"


def test_within_a_class_the_headline_names_the_worst_output_not_the_first():
    from dataclasses import replace

    state = replace(_fail("state", FailureClass.OUT_OF_TOLERANCE), cosine=0.9999, mismatch_fraction=0.01)
    logits = replace(_fail("logits", FailureClass.OUT_OF_TOLERANCE), cosine=0.2, mismatch_fraction=0.9)
    same_cosine = replace(logits, name="probs", cosine=0.2, mismatch_fraction=0.95)
    assert judge([state, logits])[1].startswith("logits:")
    assert judge([state, logits, same_cosine])[1].startswith("probs:")   # then the most elements off
    assert judge([state, replace(logits, cosine=float("nan"))])[1].startswith("state:")  # NaN is not "lowest"


def test_judge_with_real_comparisons():
    good = compare_output("boxes", f32(1, 2, 3), f32(1, 2, 3), Tolerance())
    dead = compare_output("scores", f32(1.17, -0.91), f32(0, 0), Tolerance())
    cls, reason = judge([good, dead])
    assert cls is FailureClass.DEAD_OUTPUT
    assert reason.startswith("scores: all zero")
    cls, reason = judge([good])
    assert cls is None and reason == "within tolerance (max abs 0.0e+00, cosine 1.000000)"
    assert judge([]) == (None, "no outputs compared")


# --- the reference is the reference --------------------------------------------------------------------------------

def test_rtol_is_relative_to_the_reference_not_to_mnn():
    # ref 2.0, MNN 1.5: |d| 0.5 <= rtol*|ref| = 0.25*2.0 → within; against |mnn| (0.375) it would not be.
    tol = Tolerance(atol=0.0, rtol=0.25, cosine_min=0.0)
    c = compare_output("y", np.array([2.0]), np.array([1.5]), tol)
    assert c.mismatch_fraction == 0.0 and c.passed
    assert c.max_rel == 0.25
    # The other way round: ref 1.5, MNN 2.0 is 0.5 > 0.375 → outside, although 0.5 <= 0.25*|mnn|.
    swapped = compare_output("y", np.array([1.5]), np.array([2.0]), tol)
    assert swapped.mismatch_fraction == 1.0 and not swapped.passed
    assert swapped.max_rel == pytest.approx(1 / 3)


def test_non_numeric_outputs_name_the_side():
    with pytest.raises(TypeError, match=r"^output 'labels': cannot compare reference dtype <U1$"):
        compare_output("labels", np.array(["a"]), np.array([1.0]), Tolerance())
    with pytest.raises(TypeError, match=r"^output 'labels': cannot compare MNN dtype <U1$"):
        compare_output("labels", np.array([1.0]), np.array(["a"]), Tolerance())


def test_complex_outputs_are_refused():
    with pytest.raises(TypeError, match="cannot compare MNN dtype complex128"):
        compare_output("z", np.array([1.0]), np.array([1.0 + 1.0j]), Tolerance())


# --- no finite position in common ------------------------------------------------------------------------------------

def test_matching_non_finite_everywhere_is_zero_error_and_cosine_one():
    c = compare_output("y", f32(np.nan, np.inf), f32(np.nan, np.inf), Tolerance(cosine_min=1.0))
    assert (c.max_abs, c.max_rel, c.mean_abs, c.cosine, c.mismatch_fraction) == (0.0, 0.0, 0.0, 1.0, 0.0)
    assert c.passed


def test_no_finite_position_in_common_is_all_mismatch_not_dead():
    # The reference is NaN/Inf everywhere MNN is finite: nothing to measure, every element disagrees. Neither side
    # has values to call flat or not, so this is out of tolerance, not a dead output.
    c = compare_output("y", f32(np.nan, np.inf, np.nan), f32(1, 2, 3), Tolerance())
    assert c.mismatch_fraction == 1.0
    assert (c.max_abs, c.mean_abs, c.cosine) == (0.0, 0.0, 1.0)
    assert c.failure_class is FailureClass.OUT_OF_TOLERANCE


def test_measurement_of_nothing_in_common():
    m = measure(f32(np.nan, np.nan), f32(np.nan, 1.0), Tolerance())
    assert m.shapes_match is True
    assert m.ref_flat is True and m.mnn_flat is True
    assert m.mismatch_fraction == 0.5


def test_measurement_of_different_shapes():
    m = measure(np.zeros((2, 3)), np.zeros(6), Tolerance())
    assert m.shapes_match is False
    assert (m.max_abs, m.cosine, m.mismatch_fraction, m.topk) == (None, None, None, None)


def test_huge_finite_values_give_an_infinite_error_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = compare_output("y", np.array([1e308, 1.0]), np.array([-1e308, 1.0]), Tolerance())
    assert c.max_abs == math.inf
    assert c.cosine == -1.0 or c.cosine < 0     # opposite directions, scaled before squaring
    assert c.failure_class is FailureClass.OUT_OF_TOLERANCE


# --- flatness --------------------------------------------------------------------------------------------------------

def test_is_flat():
    assert is_flat(np.array([]))
    assert is_flat(np.array([5.0]))
    assert is_flat(np.array([1e-30, 0.0]))           # the dead-zero bound is inclusive
    assert not is_flat(np.array([1.1e-30, 0.0]))
    assert is_flat(np.array([0.5, 0.5, 0.5]))
    assert not is_flat(np.array([0.5, 0.5, 0.6]))


def test_output_of_exactly_the_dead_zero_bound_is_all_zero():
    c = compare_output("y", np.array([1.0, -1.0]), np.array([DEAD_ZERO_ABS, DEAD_ZERO_ABS]), Tolerance())
    assert c.failure_class is FailureClass.DEAD_OUTPUT
    assert c.reason == "all zero (max |x| 1.00e-30) where the reference spans [-1, 1]"


def test_flat_output_out_of_tolerance_by_mismatch_alone_is_dead():
    ref = np.array([1.0, 1.0001])            # cosine with a constant 1.0 is ~1: only the element check fails
    c = compare_output("y", ref, np.array([1.0, 1.0]), Tolerance(atol=0.0, rtol=0.0, cosine_min=0.9999))
    assert c.cosine > 0.9999 and c.mismatch_fraction == 0.5
    assert c.failure_class is FailureClass.DEAD_OUTPUT
    assert c.reason == "constant 1 where the reference spans [1, 1]"


def test_flat_output_out_of_tolerance_by_cosine_alone_is_dead():
    c = compare_output("y", np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]),
                       Tolerance(mismatch_max=1.0, cosine_min=0.99))
    assert c.cosine < 0.99
    assert c.failure_class is FailureClass.DEAD_OUTPUT
    assert c.reason == "constant 2 where the reference spans [1, 3]"


def test_flat_reference_and_flat_output_are_not_dead():
    c = compare_output("y", np.zeros(3), np.full(3, 0.5), Tolerance())
    assert c.failure_class is FailureClass.OUT_OF_TOLERANCE


# --- cosine ----------------------------------------------------------------------------------------------------------

def test_cosine_of_empty_arrays_is_one():
    assert cosine(np.array([]), np.array([])) == 1.0
    assert cosine(np.array([]), np.array([0.0])) == 1.0


def test_cosine_never_leaves_minus_one_to_one():
    # 3*a is parallel to a, but its rounding makes the raw quotient 1.0000000000000002
    a = np.array([0.1, 0.7])
    assert cosine(a, 3 * a) == 1.0
    assert cosine(a, -3 * a) == -1.0


def test_cosine_of_float16_and_integer_inputs_is_computed_in_float64():
    # float16 squares overflow at 65504; int64 squares at 3e9
    h = np.array([300.0, 400.0], dtype=np.float16)
    assert cosine(h, h) == 1.0
    assert cosine(h, np.array([400.0, 300.0], dtype=np.float16)) == pytest.approx(0.96)
    i = np.array([2**40, 2**41], dtype=np.int64)
    assert cosine(i, i) == 1.0
    assert cosine(i, np.array([2**41, 2**40], dtype=np.int64)) == pytest.approx(0.8)


def test_cosine_is_not_judged_at_exactly_the_absolute_noise_floor():
    # peak |x| == atol counts as noise: the element-wise test (which passes) decides alone
    c = compare_output("y", np.array([0.25, 0.0]), np.array([0.0, 0.25]), Tolerance(atol=0.25, rtol=0.0))
    assert c.cosine == 0.0 and c.mismatch_fraction == 0.0
    assert c.passed


# --- top-k -----------------------------------------------------------------------------------------------------------

def test_real_flip_without_near_ties_has_a_short_reason():
    c = compare_output("cls", np.array([[0.9, 0.1]]), np.array([[0.45, 0.55]]), LOOSE, TopK())
    assert (c.topk_flips, c.near_tie_flips) == (1, 0)
    assert c.reason == "top-1 flipped at 1 of 1 positions along axis -1"


def test_nan_never_enters_a_top_k_set():
    # np.argmax ranks NaN first; a NaN score must rank last, so MNN's top-1 is still class 1
    ref = np.array([[1.0, 3.0, 2.0], [0.5, 0.1, 0.2]])
    mnn = np.array([[np.nan, 3.0, 2.0], [0.5, 0.1, np.nan]])
    c = compare_output("cls", ref, mnn, LOOSE, TopK())
    assert (c.topk_agreement, c.topk_flips, c.near_tie_flips) == (1.0, 0, 0)
    assert c.failure_class is FailureClass.NAN_INF
    both = compare_output("cls", mnn, mnn.copy(), LOOSE, TopK())
    assert (both.topk_agreement, both.topk_flips) == (1.0, 0) and both.passed
    top2 = compare_output("cls", ref[:1], mnn[:1], LOOSE, TopK(k=2))
    assert (top2.topk_agreement, top2.topk_flips) == (1.0, 0)


def test_nan_in_the_reference_ranks_last_too():
    ref = np.array([[np.nan, 3.0, 2.0]])
    mnn = np.array([[0.0, 3.0, 2.0]])
    c = compare_output("cls", ref, mnn, LOOSE, TopK())
    assert (c.topk_agreement, c.topk_flips, c.near_tie_flips) == (1.0, 0, 0)


def test_topk_along_a_middle_axis_of_a_3d_output():
    # (batch 2, classes 3, positions 2): the class axis is axis 1, neither first nor last
    ref = np.zeros((2, 3, 2))
    ref[0, :, 0] = [0.1, 0.8, 0.1]
    ref[0, :, 1] = [0.7, 0.2, 0.1]
    ref[1, :, 0] = [0.2, 0.2, 0.6]
    ref[1, :, 1] = [0.3, 0.3, 0.4]
    mnn = ref.copy()
    mnn[0, :, 0] = [0.45, 0.4, 0.15]    # a real flip at one of the four positions: error 0.4 < gap 0.7
    c = compare_output("seg", ref, mnn, LOOSE, TopK(k=1, axis=1))
    assert (c.topk_agreement, c.topk_flips, c.near_tie_flips) == (0.75, 1, 0)
    first = compare_output("seg", np.moveaxis(ref, 1, 0), np.moveaxis(mnn, 1, 0), LOOSE, TopK(k=1, axis=0))
    assert (first.topk_agreement, first.topk_flips) == (0.75, 1)
    mid = compare_output("seg", np.moveaxis(ref, 1, -1), np.moveaxis(mnn, 1, -1), LOOSE, TopK(k=1, axis=-1))
    assert (mid.topk_agreement, mid.topk_flips) == (0.75, 1)


def test_top2_over_several_positions_counts_each_position():
    ref = np.array([[0.5, 0.3, 0.2, 0.0], [0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.3, 0.4]])
    mnn = np.array([[0.3, 0.5, 0.2, 0.0],       # same set, other order: agrees
                    [0.5, 0.24, 0.26, 0.0],     # class 2 replaces class 1, error 0.06 < gap 0.1: real flip
                    [0.1, 0.2, 0.3, 0.4]])
    c = compare_output("s", ref, mnn, LOOSE, TopK(k=2))
    assert c.topk_agreement == pytest.approx(2 / 3)
    assert (c.topk_flips, c.near_tie_flips) == (1, 0)


def test_tied_scores_pick_the_earliest_classes_on_both_sides():
    # Ties at the k-th place: a stable ranking takes the earliest classes, so identical outputs always agree.
    scores = np.tile([1.0, 0.0], 9)[None, :17]
    c = compare_output("s", scores, scores.copy(), LOOSE, TopK(k=3))
    assert (c.topk_agreement, c.topk_flips, c.near_tie_flips) == (1.0, 0, 0)


def test_near_tie_error_is_taken_per_position():
    ref = np.array([[0.6, 0.4, 0.0], [0.5, 0.49, 0.0]])
    mnn = np.array([[0.4, 0.41, 0.0],          # real flip: gap 0.2, largest error here 0.2 → near tie by error
                    [0.48, 0.495, 0.0]])       # near tie: gap 0.01 <= error 0.02
    c = compare_output("s", ref, mnn, LOOSE, TopK())
    assert (c.topk_flips, c.near_tie_flips) == (0, 2)
    mnn[0] = [0.55, 0.56, 0.0]                 # same flip with error 0.16 < 0.2: real, whatever row 1's error
    mnn[1] = [0.0, 0.495, 0.9]                 # row 1 now has an error of 0.9 and a near tie by that error
    c = compare_output("s", ref, mnn, LOOSE, TopK())
    assert (c.topk_flips, c.near_tie_flips) == (1, 1)


@pytest.mark.parametrize("tol, near", [
    (Tolerance(atol=0.25, rtol=0.0, cosine_min=0.0, mismatch_max=1.0), True),    # gap == atol: a near tie
    (Tolerance(atol=0.0, rtol=0.25, cosine_min=0.0, mismatch_max=1.0), True),    # gap == rtol*|kth score|
    (Tolerance(atol=0.24, rtol=0.0, cosine_min=0.0, mismatch_max=1.0), False),
])
def test_near_tie_limit_is_inclusive(tol, near):
    # kth (reference's top) score 1.0, the intruder's reference score 0.75: gap exactly 0.25; error only 0.2
    ref = np.array([[1.0, 0.75]])
    mnn = np.array([[0.9, 0.95]])
    c = compare_output("s", ref, mnn, tol, TopK())
    assert (c.topk_flips, c.near_tie_flips) == ((0, 1) if near else (1, 0))


def test_near_tie_rtol_scales_with_the_reference_score():
    # kth score 4.0, rtol 0.1: the limit is 0.4; the gap 0.3 is within, the error 0.2 is not enough alone
    ref = np.array([[4.0, 3.7]])
    mnn = np.array([[3.8, 3.9]])
    tol = Tolerance(atol=0.0, rtol=0.1, cosine_min=0.0, mismatch_max=1.0)
    c = compare_output("s", ref, mnn, tol, TopK())
    assert (c.topk_flips, c.near_tie_flips) == (0, 1)


def test_near_tie_by_an_error_exactly_the_gap():
    ref = np.array([[1.0, 0.5]])
    mnn = np.array([[0.5, 1.0]])            # error 0.5 == gap 0.5: the error can explain the swap
    c = compare_output("s", ref, mnn, Tolerance(atol=0.0, rtol=0.0, cosine_min=-1.0, mismatch_max=1.0), TopK())
    assert (c.topk_flips, c.near_tie_flips) == (0, 1)


def test_topk_with_non_finite_scores_raises_no_warning():
    ref = np.array([[np.nan, 1.0, 0.5], [1e308, -1e308, 0.0]])
    mnn = np.array([[np.nan, 0.4, 0.5], [-1e308, 1e308, 0.0]])   # NaN on both sides: its error is NaN, not a number
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = compare_output("s", ref, mnn, LOOSE, TopK())
    assert c.topk_agreement == 0.0
    assert c.topk_flips + c.near_tie_flips == 2


def test_non_finite_scores_on_both_sides_do_not_hide_a_near_tie():
    # Without the first column this is a near tie by error (1.0 vs 0.5, moved by 0.6): a column that is NaN on both
    # sides says nothing about the other scores and must not turn it into a real flip.
    c = compare_output("s", np.array([[np.nan, 1.0, 0.5]]), np.array([[np.nan, 0.4, 0.5]]), LOOSE, TopK())
    assert (c.topk_flips, c.near_tie_flips) == (0, 1)
    # ... nor make up an error: the finite scores moved by at most 0.6, less than the 1.0 gap, so a real flip.
    real = compare_output("s", np.array([[np.nan, 1.0, 0.0]]), np.array([[np.nan, 0.5, 0.6]]), LOOSE, TopK())
    assert (real.topk_flips, real.near_tie_flips) == (1, 0)


# --- judging a case ----------------------------------------------------------------------------------------------------

def _pass(name: str, cos) -> OutputComparison:
    return OutputComparison(name=name, ref_shape=(1,), mnn_shape=(1,), ref_dtype="float32", mnn_dtype="float32",
                            tolerance=Tolerance(), max_abs=0.0 if cos is not None else None, cosine=cos)


def test_judge_names_the_output_with_the_lowest_cosine():
    cls, reason = judge([_pass("a", 0.99999), _pass("b", 0.999991), _pass("c", 0.99998), _pass("d", 1.0)])
    assert cls is None
    assert reason == "4 outputs within tolerance (lowest cosine on c: max abs 0.0e+00, cosine 0.999980)"


def test_judge_with_an_output_not_compared_numerically():
    # a string output compared for equality in drift has no cosine: it is not the lowest
    cls, reason = judge([_pass("labels", None), _pass("scores", 0.99999)])
    assert reason == "2 outputs within tolerance (lowest cosine on scores: max abs 0.0e+00, cosine 0.999990)"
    cls, reason = judge([_pass("labels", None), _pass("scores", 1.0)])
    assert reason == "2 outputs within tolerance (lowest cosine on labels: not compared)"
    assert judge([_pass("labels", None)]) == (None, "within tolerance (not compared)")


def test_judge_names_the_first_of_equally_fundamental_failures():
    outs = [_pass("ok", 1.0), _fail("b", FailureClass.OUT_OF_TOLERANCE), _fail("a", FailureClass.OUT_OF_TOLERANCE),
            _fail("c", FailureClass.TOPK_FLIP)]
    assert judge(outs) == (FailureClass.OUT_OF_TOLERANCE, "b: out-of-tolerance detail (+2 more failing outputs)")


def test_judge_with_one_failing_output_has_no_suffix():
    outs = [_pass("ok", 1.0), _fail("scores", FailureClass.DEAD_OUTPUT)]
    assert judge(outs) == (FailureClass.DEAD_OUTPUT, "scores: dead-output detail")


def test_an_extra_unit_axis_with_the_same_values_is_output_layout_not_a_skipped_check():
    ref = np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)
    same = compare_output("y", ref, ref.reshape(2, 1, 5), Tolerance())
    assert same.failure_class is FailureClass.OUTPUT_LAYOUT and not same.passed
    assert same.mnn_shape == (2, 1, 5) and same.max_abs == 0.0
    assert same.reason == "same values in another layout: shape (2, 1, 5) vs reference (2, 5) (unit axes differ)"
    dead = compare_output("y", ref, np.zeros((2, 1, 5), np.float32), Tolerance())
    assert dead.failure_class is FailureClass.DEAD_OUTPUT and dead.reason.endswith(
        "; and shape (2, 1, 5) vs reference (2, 5)")
    # the same element count in another arrangement is not a layout question: values cannot be paired
    other = compare_output("y", ref, ref.reshape(5, 2), Tolerance())
    assert other.failure_class is FailureClass.SHAPE_MISMATCH and other.max_abs is None
