"""Property tests (hypothesis): is_a is reflexive and transitive over the loaded closure, $subsumes
answers agree with is_a, and run-time additions keep the closure exact."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.terminology import Terminology, default_terminology

T = default_terminology()
CONCEPTS = T.concepts()
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

concepts = st.sampled_from(CONCEPTS)


@st.composite
def chains(draw):
    """(a, b, c) with b an ancestor of a and c an ancestor of b."""
    a = draw(concepts)
    b = draw(st.sampled_from(sorted(T.ancestors(*a))))
    c = draw(st.sampled_from(sorted(T.ancestors(*b))))
    return a, b, c


@FAST
@given(concepts)
def test_reflexive(a):
    assert T.is_a(*a, *a)
    assert a in T.ancestors(*a)
    assert T.subsumes(a[0], a[1], a[1]) == "equivalent"


@FAST
@given(chains())
def test_transitive(chain):
    a, b, c = chain
    assert T.is_a(*a, *b) and T.is_a(*b, *c)
    assert T.is_a(*a, *c)
    assert T.ancestors(*b) <= T.ancestors(*a)


@FAST
@given(concepts, concepts)
def test_subsumes_agrees_with_is_a(a, b):
    if a[0] != b[0]:
        return
    outcome = T.subsumes(a[0], a[1], b[1])
    a_is_b, b_is_a = T.is_a(*a, *b), T.is_a(*b, *a)
    expected = {(True, True): "equivalent", (False, True): "subsumes", (True, False): "subsumed-by",
                (False, False): "not-subsumed"}[(a_is_b, b_is_a)]
    assert outcome == expected
    assert a_is_b == (b in T.ancestors(*a))


edges = st.lists(st.tuples(st.integers(0, 14), st.integers(0, 14)), max_size=40)


def _reachable(graph: list[tuple[int, int]], start: int) -> set[int]:
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        for child, parent in graph:
            if child == node and parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


@FAST
@given(edges, edges)
def test_incremental_add_hierarchy_equals_a_full_rebuild(first, later):
    """Closure after add_hierarchy (incremental) == reachability over all edges (cycles included)."""
    t = Terminology()
    for child, parent in first:
        t.add_concept("urn:test", str(child), None, [str(parent)])
    t.finish()
    for child, parent in later:
        t.add_hierarchy("urn:test", str(child), None, [str(parent)])
    graph = first + later
    for node in range(15):
        expected = {("urn:test", str(n)) for n in _reachable(graph, node)}
        assert set(t.ancestors("urn:test", str(node))) == expected
