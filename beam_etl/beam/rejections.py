"""Steps yield a :class:`~beam_etl.elements.Rejection` in place of an input they refuse; this
routes them apart from the values, so that nothing refused is dropped."""

from __future__ import annotations

import apache_beam as beam

from beam_etl.elements import Rejection

REJECTED = "rejected"


def _route(element):
    yield beam.pvalue.TaggedOutput(REJECTED, element) if isinstance(element, Rejection) else element


@beam.ptransform_fn
def SplitRejections(mixed):  # pylint: disable=invalid-name
    """A step's output of values and :class:`Rejection` s -> ``(values, rejections)``. The
    routing step fuses with the step before it: it costs no shuffle."""
    routed = mixed | "RouteRejections" >> beam.FlatMap(_route).with_outputs(REJECTED, main="values")
    return routed.values, routed[REJECTED]
