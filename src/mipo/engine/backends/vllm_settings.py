"""The ``vllm:`` settings of a stage: vLLM's own engine arguments, checked before any model loads, and the
defaults mipo gives them so that an engine starts on a 24-80 GB card (docs/gpu.md).

vLLM is not installed where mipo's tests run, so the names it accepts are kept here, copied from the fields
of ``vllm.engine.arg_utils.EngineArgs`` (what ``vllm.LLM(**kwargs)`` passes them to) in the source named by
``ENGINE_ARGS_SOURCE``. A newer vLLM that adds a field: add its name here.
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
from typing import Any

from mipo.core.processes import world_size

ENGINE_ARGS_SOURCE = "vllm 0.33.0 (the PyPI wheel: vllm/engine/arg_utils.py, class EngineArgs, public fields)"

ENGINE_ARGS = frozenset(
    """
    model enable_return_routed_experts return_sampling_mask model_weights served_model_name tokenizer
    hf_config_path runner convert skip_tokenizer_init enable_prompt_embeds tokenizer_mode
    trust_remote_code allowed_local_media_path allowed_media_domains download_dir
    safetensors_load_strategy safetensors_prefetch_num_threads safetensors_prefetch_block_size
    load_format config_format dtype kv_cache_dtype seed max_model_len cudagraph_capture_sizes
    max_cudagraph_capture_size ir_op_priority distributed_executor_backend pipeline_parallel_size
    master_addr master_port nnodes node_rank distributed_timeout_seconds cpu_distributed_timeout_seconds
    numa_bind numa_bind_nodes numa_bind_cpus device_ids tensor_parallel_size
    prefill_context_parallel_size decode_context_parallel_size dcp_comm_backend dcp_q_replicate
    dcp_kv_cache_interleave_size cp_kv_cache_interleave_size data_parallel_size data_parallel_rank
    data_parallel_start_rank data_parallel_size_local data_parallel_address data_parallel_rpc_port
    data_parallel_hybrid_lb data_parallel_external_lb data_parallel_multi_port_external_lb
    data_parallel_backend enable_hc_sp enable_expert_parallel enable_batch_sharded_sampling
    enable_ep_weight_filter moe_backend linear_backend sparse_indexer_topk_backend all2all_backend
    enable_elastic_ep elastic_ep_max_dp_size enable_dbo ubatch_size dbo_decode_token_threshold
    dp_sync_interval dbo_prefill_token_threshold disable_nccl_for_dp_synchronization eplb_config
    enable_eplb expert_placement_strategy max_parallel_loading_workers block_size enable_prefix_caching
    prefix_caching_hash_algo prefix_cache_retention_interval disable_sliding_window disable_cascade_attn
    offload_backend cpu_offload_gb cpu_offload_params offload_group_size offload_num_in_group
    offload_prefetch_step offload_params gpu_memory_utilization kv_cache_memory_bytes
    max_num_batched_tokens max_num_scheduled_tokens long_prefill_token_threshold
    long_prefill_token_threshold_adaptive max_num_seqs max_num_active_seqs max_num_queued_reqs
    max_num_queued_tokens max_logprobs logprobs_mode use_fp64_gumbel enable_trace_replay
    disable_log_stats aggregate_engine_logging revision code_revision hf_token hf_overrides
    model_class_overrides tokenizer_revision quantization quantization_config
    allow_deprecated_quantization enforce_eager disable_custom_all_reduce enable_shm_tensor_arena
    language_model_only limit_mm_per_prompt enable_mm_embeds interleave_mm_strings media_io_kwargs
    mm_processor_kwargs mm_processor_cache_gb mm_processor_cache_type mm_hasher_algorithm
    mm_shm_cache_max_object_size_mb mm_encoder_only mm_encoder_tp_mode mm_encoder_attn_backend
    mm_encoder_attn_dtype mm_encoder_fp8_scale_path mm_encoder_fp8_scale_save_path
    mm_encoder_fp8_scale_save_margin io_processor_plugin renderer_num_workers skip_mm_profiling
    video_pruning_rate video_pruning_method mm_tensor_ipc mm_processor_device mm_ipc_gpu_memory_gb
    mm_device_do_normalize enable_lora max_loras max_lora_rank default_mm_loras fully_sharded_loras
    max_cpu_loras lora_dtype lora_target_modules enable_tower_connector_lora specialize_active_lora
    enable_mixed_moe_lora_format enable_moe_shared_loras max_lora_cls_labels ray_workers_use_nsight
    num_gpu_blocks_override model_loader_extra_config ignore_patterns enable_chunked_prefill
    disable_chunked_mm_input scheduler_reserve_full_isl prefill_schedule_interval watermark
    disable_hybrid_kv_cache_manager structured_outputs_config aux_output_config reasoning_parser
    reasoning_parser_plugin speculative_config spec_method spec_model spec_tokens watermark_config
    diffusion_config show_hidden_metrics_for_version otlp_traces_endpoint collect_detailed_traces
    per_request_spec_decode_metrics kv_cache_metrics kv_cache_metrics_sample custom_histogram_buckets
    cudagraph_metrics enable_layerwise_nvtx_tracing enable_mfu_metrics enable_logging_iteration_details
    jit_monitor_mode jit_monitor_verbose enable_mm_processor_stats scheduling_policy scheduler_cls
    pooler_config compilation_config attention_config engram_config mamba_config kernel_config
    enable_flashinfer_autotune monokernel worker_cls worker_extension_cls profiler_config logging_config
    log_level log_config_file kv_transfer_config kv_events_config ec_transfer_config ec_manager_config
    reasoning_config generation_config enable_sleep_mode sleep_mode_backend sleep_mode_offload_cudagraph
    sleep_preserve_parameter_names enable_cumem_allocator enable_nccl_comm_suspend
    override_generation_config model_impl attention_backend kv_cache_dtype_skip_layers mamba_cache_dtype
    mamba_ssm_cache_dtype mamba_block_size prefix_match_unit mamba_cache_mode
    enable_mamba_shared_prefix_checkpoint replayssm_buffer_len use_replayssm mamba_backend
    mamba_ssu_algorithm enable_mamba_cache_stochastic_rounding mamba_cache_philox_rounds
    additional_config use_tqdm_on_load pt_load_map_location logits_processors async_scheduling
    stream_interval kv_sharing_fast_prefill swa_bounded_replay optimization_level performance_mode
    fault_tolerance_config enable_fault_tolerance kv_offloading_size kv_offloading_backend tokens_only
    shutdown_timeout watchdog_config weight_transfer_config fail_on_environ_validation
    gdn_prefill_backend kda_prefill_backend kda_decode_backend
    """.split()
)

# Set by mipo from its own flags: the model (--model, a LoRA adapter's base), its tokenizer, the seed (--seed).
SET_BY_MIPO = {"model": "--model", "tokenizer": "--model", "seed": "--seed"}

# The longest prompt an engine is sized for by default, in tokens: max_model_len is this plus max_new_tokens
# (capped at the model's maximum), so the KV cache of a 128k-context model fits a 24 GB card. A prompt
# longer than the budget is dropped as "too long for the model"; raise it with vllm: {max_model_len: N}.
PROMPT_BUDGET = 4096

# Of the card's memory, what vLLM may take (weights + KV cache); the rest is left to the CUDA context and
# to this process's tokenizer and tensors. vLLM's own default is 0.9.
GPU_MEMORY_UTILIZATION = 0.85

# vLLM's accepted LoRA ranks (vllm/config/lora.py, MaxLoRARanks): an adapter's rank is served under the next one.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


VLLM_MISSING = (
    "backend 'vllm' needs vLLM, which is not installed: pip install 'mipo[vllm]' -c constraints-gpu.txt "
    "(Linux with a GPU), or use --backend hf"
)


def vllm_installed() -> bool:
    return "vllm" in sys.modules or importlib.util.find_spec("vllm") is not None


def vllm_problems(settings: dict[str, Any], backend: str) -> list[str]:
    """Every problem with a stage's ``vllm`` settings, each naming the setting and the fix; nothing loads."""
    if backend != "vllm":
        return (
            [f"vllm: settings for the vllm backend, but backend is {backend!r}: add --backend vllm"]
            if settings
            else []
        )
    problems = []
    if not vllm_installed():
        problems.append(VLLM_MISSING)
    for key in settings:
        if key in SET_BY_MIPO:
            problems.append(f"vllm: {key} is set by mipo from {SET_BY_MIPO[key]}: remove it from vllm")
        elif key not in ENGINE_ARGS:
            close = difflib.get_close_matches(key, sorted(ENGINE_ARGS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"vllm: unknown setting '{key}'{hint}: vllm takes vLLM's EngineArgs fields")
    parallel = settings.get("tensor_parallel_size", 1)
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        problems.append(f"vllm: tensor_parallel_size must be a whole number of at least 1, got {parallel!r}")
    elif parallel > 1:
        problems += _parallel_problems(parallel)
    return problems


def _parallel_problems(parallel: int) -> list[str]:
    if world_size() > 1:
        return [
            f"vllm: tensor_parallel_size {parallel} under {world_size()} processes: run one process "
            "(no accelerate launch) with tensor_parallel_size N, or N processes with tensor_parallel_size 1"
        ]
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if parallel > gpus:
        return [
            f"vllm: tensor_parallel_size {parallel} needs {parallel} GPUs, this machine has {gpus}: "
            f"set vllm: {{tensor_parallel_size: {max(gpus, 1)}}}"
        ]
    return []


def engine_options(config: Any) -> dict[str, Any]:
    """What ``load_engine`` passes on to a backend's loader from a stage's config: its ``vllm`` settings and
    its longest reply (``mipo.engine.backends.load_engine``)."""
    return {"engine_settings": config.vllm, "max_new_tokens": config.max_new_tokens}


def engine_arguments(
    settings: dict[str, Any], *, model_maximum: int | None, max_new_tokens: int, lora_rank: int | None
) -> dict[str, Any]:
    """``vllm.LLM``'s keyword arguments besides the model and seed: mipo's defaults, then the user's ``vllm``
    settings over them. ``model_maximum``: the model's own context length; ``lora_rank``: an adapter's rank."""
    budget = PROMPT_BUDGET + max_new_tokens
    arguments: dict[str, Any] = {
        "dtype": default_dtype(),
        "gpu_memory_utilization": GPU_MEMORY_UTILIZATION,
        "max_model_len": min(budget, model_maximum) if model_maximum else budget,
    }
    if world_size() > 1:
        # each process of accelerate launch runs its own engine on its own GPU, in this process (as TRL's
        # colocate mode does); the process pinned its device before the engine started
        arguments["distributed_executor_backend"] = "external_launcher"
    if lora_rank is not None:
        arguments["enable_lora"] = True
        arguments["max_lora_rank"] = next((r for r in LORA_RANKS if r >= lora_rank), lora_rank)
    arguments.update(settings)
    return arguments


def default_dtype() -> str:
    """bfloat16 where the GPU computes it natively (not emulated: V100, T4; ``--dtype auto``'s own test),
    else float16."""
    from mipo.engine.dtypes import auto_dtype

    return "bfloat16" if auto_dtype("cuda")[0] == "bfloat16" else "float16"
