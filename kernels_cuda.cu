/* kernels_cuda.cu — the optional CUDA path of halda (built with `make CUDA=1`).
 *
 * Not written yet: it belongs to the CUDA issue.  The plan, so the engine's seams fit it:
 * the GPU runs the last n layers of a device's window (the Halda plan's n[m]); its weights are
 * copied to VRAM once at load, its KV cache lives in VRAM, and the CPU hands it the activations
 * of the window's first GPU layer (n_tok × n_embd F32) and takes them back after the last.
 * One kernel per weight type's dot product, mirroring the CPU table in halda.c section 4.
 * Nothing in halda.c depends on this file today.
 */
