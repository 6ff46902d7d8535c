# SLURM helpers for _launch.sh (sourced, not run). Pure bash: no SLURM tool is required, but
# `scontrol show hostnames` is preferred when it exists (it knows every nodelist syntax).

# slurm_first_host NODELIST: the first host of a compressed SLURM nodelist.
#   node07 -> node07; node[01-02,05],gpu3 -> node01; gpu-a[1-3]-ib -> gpu-a1-ib;
#   a[1-2]b[3-4] -> a1b3
# Zero padding is kept because the first number of each range is copied as written.
slurm_first_host() {
    local list=$1 host="" depth=0 skip=0 i c
    for ((i = 0; i < ${#list}; i++)); do
        c=${list:i:1}
        case $c in
            "[") depth=1; skip=0 ;;
            "]") depth=0; skip=0 ;;
            ,) [ "$depth" -eq 0 ] && break; skip=1 ;;  # a top-level comma ends the first host
            -) if [ "$depth" -eq 1 ]; then skip=1; else host+=$c; fi ;;
            *) [ "$skip" -eq 0 ] && host+=$c ;;
        esac
    done
    printf '%s\n' "$host"
}

# slurm_master_addr: the first host of this job step's nodes (where node rank 0 runs).
slurm_master_addr() {
    local list=${SLURM_STEP_NODELIST:-${SLURM_JOB_NODELIST:-${SLURM_NODELIST:-}}}
    [ -n "$list" ] || return 1
    if command -v scontrol >/dev/null 2>&1; then
        local first
        first=$(scontrol show hostnames "$list" 2>/dev/null | head -n 1)
        if [ -n "$first" ]; then
            printf '%s\n' "$first"
            return 0
        fi
    fi
    slurm_first_host "$list"
}

# slurm_gpus_per_node: GPUs SLURM gave this node, from SLURM_GPUS_ON_NODE ("8") or
# SLURM_GPUS_PER_NODE ("8", "h100:8", "gpu:h100:8(S:0-1)"); prints nothing when neither is set
# or a CPU-only job has 0 (the scripts then start one process unless told otherwise).
slurm_gpus_per_node() {
    if [ "${SLURM_GPUS_ON_NODE:-}" = 0 ]; then
        return 0
    elif [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
        printf '%s\n' "$SLURM_GPUS_ON_NODE"
    elif [ -n "${SLURM_GPUS_PER_NODE:-}" ]; then
        local spec=${SLURM_GPUS_PER_NODE%%(*}
        printf '%s\n' "${spec##*:}"
    fi
}
