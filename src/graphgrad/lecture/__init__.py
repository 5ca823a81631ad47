"""The lecture companion: every topic of *Neural Networks & Backpropagation*, in slide order,
as a figure or table with the slide's claim, the command that reproduces it and the numbers
measured (``graphgrad lecture [--out DIR] [--quick]``).

:func:`run_lecture` runs the topics of :data:`TOPICS` and writes ``index.html``, ``README.md``
and ``lecture.json`` into the output folder, next to the figures. The figures need matplotlib
(the ``train`` extra); graphs are drawn by Graphviz's ``dot`` when it is installed, and given
as DOT text otherwise. :mod:`graphgrad.lecture.classifier` builds the lecture's D = 2, T = 2
softmax classifier from units (``graphgrad graph --model softmax-classifier``).
"""

from ._run import TOPICS, run_lecture, topic_keys

__all__ = ["TOPICS", "run_lecture", "topic_keys"]
