"""Making data sets: everything that writes the challenge layout rather than reads it.

convert     raw interaction logs (and MicroLens-50k) -> the challenge layout
embed       Task 1: text and image encoders, cache, PCA -> frozen item embeddings
synth       a synthetic data set with planted structure, for demos and tests
sample      a smaller data set cut from an existing one, for quick iteration

Reading and validating the layout stays in ``mmctr.data``, which knows nothing of this
package; the arrow goes one way only (prepare imports data's readers, never the reverse). The
subpackages are not imported here, so ``import mmctr.prepare.synth`` does not load the encoders.
"""
