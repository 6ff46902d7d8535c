# Shared by train_vspw.sh and eval_vspw.sh (sourced, not run).
# launch_vidseg SUBCOMMAND FIXED_ARG... -- [GPUS] [EXTRA_ARG...]
#   GPUS > 1: `torchrun --nproc_per_node=GPUS -m vidseg SUBCOMMAND ...`; else plain `vidseg SUBCOMMAND ...`.
#   $PYTHON picks the interpreter (default: python).
launch_vidseg() {
    local fixed=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        fixed+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift  # the "--"
    local gpus=1
    if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
        gpus=$1
        shift
    fi
    local python=${PYTHON:-python}
    if [ "$gpus" -gt 1 ]; then
        exec "$python" -m torch.distributed.run --standalone --nproc_per_node="$gpus" \
            -m vidseg "${fixed[@]}" "$@"
    fi
    exec "$python" -m vidseg "${fixed[@]}" "$@"
}
