"""Host side: lay out campaigns, dispatch experiments to runners, track state, collect results.

Never imports torch, vLLM, TensorRT-LLM or NVML: only files cross into workers.
"""
