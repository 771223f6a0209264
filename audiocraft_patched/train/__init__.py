"""Training of the small world MusicGen on CPU: the codec (`codec`, `rvq`) and the LM (`lm`).

Upstream trains through `audiocraft/solvers/{compression,musicgen}.py`; these are our own compact
scripts for the embedded default model.
"""
