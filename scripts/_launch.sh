# Shared by train_vspw.sh and eval_vspw.sh (sourced, not run).
# launch_vidseg SUBCOMMAND FIXED_ARG... -- [GPUS] [EXTRA_ARG...]
#
# Processes per node: GPUS (the first extra argument, when it is a number), else $NPROC_PER_NODE,
#   else the GPUs SLURM gave this node, else 1. On a CPU-only machine it is the number of CPU
#   processes per node (gloo); give each a share of the cores with OMP_NUM_THREADS.
# Nodes: NNODES (default 1), NODE_RANK (0 .. NNODES-1, default 0), MASTER_ADDR (the address of
#   node rank 0, default 127.0.0.1), MASTER_PORT (default 29500). Run the same command on every
#   node, each with its own NODE_RANK.
# Under SLURM (SLURM_JOB_ID set; one `srun` task per node, torchrun starts the GPUS processes
#   of its node): NNODES = SLURM_NNODES, NODE_RANK = SLURM_NODEID, MASTER_ADDR = first host of
#   the step's nodelist, GPUS = SLURM_GPUS_ON_NODE / SLURM_GPUS_PER_NODE and MASTER_PORT =
#   29500 + SLURM_JOB_ID % 1000 (two jobs sharing a first node do not collide); a variable set
#   explicitly wins.
# One process in all: plain `vidseg SUBCOMMAND ...`. One node and no MASTER_ADDR given:
#   `torchrun --standalone` (it picks a free port). Otherwise torchrun's static rendezvous.
# DRY_RUN=1 prints the command instead of running it. $PYTHON picks the interpreter (default
#   python). A bad value fails in one line with exit code 2.

source "$(dirname "${BASH_SOURCE[0]}")/_slurm.sh"

_launch_fail() {
    echo "$(basename "$0"): error: $*" >&2
    exit 2
}

# _launch_int NAME VALUE MIN MAX: VALUE must be a whole number in [MIN, MAX]
_launch_int() {
    [[ $2 =~ ^[0-9]+$ ]] || _launch_fail "$1=$2 is not a whole number"
    if [ "$((10#$2))" -lt "$3" ] || [ "$((10#$2))" -gt "$4" ]; then
        _launch_fail "$1=$2 is out of range; expected $3 .. $4"
    fi
}

launch_vidseg() {
    local fixed=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        fixed+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift  # the "--"
    local nproc=${NPROC_PER_NODE:-}
    if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
        nproc=$1
        shift
    fi
    local nnodes=${NNODES:-} node_rank=${NODE_RANK:-} addr=${MASTER_ADDR:-} port=${MASTER_PORT:-}
    local addr_given=$addr
    if [ -n "${SLURM_JOB_ID:-}" ]; then
        nnodes=${nnodes:-${SLURM_NNODES:-${SLURM_JOB_NUM_NODES:-}}}
        node_rank=${node_rank:-${SLURM_NODEID:-}}
        [ -n "$nproc" ] || nproc=$(slurm_gpus_per_node)
        if [[ $SLURM_JOB_ID =~ ^[0-9]+$ ]]; then
            port=${port:-$((29500 + 10#$SLURM_JOB_ID % 1000))}
        fi
        if [ -z "$addr" ] && [ "${nnodes:-1}" != 1 ]; then
            addr=$(slurm_master_addr) || _launch_fail "SLURM_JOB_ID=$SLURM_JOB_ID but no" \
                "SLURM_STEP_NODELIST / SLURM_JOB_NODELIST to find the master node; set MASTER_ADDR"
        fi
    fi
    nnodes=${nnodes:-1}
    node_rank=${node_rank:-0}
    addr=${addr:-127.0.0.1}
    port=${port:-29500}
    nproc=${nproc:-1}
    _launch_int NNODES "$nnodes" 1 100000
    _launch_int NODE_RANK "$node_rank" 0 100000
    [ "$((10#$node_rank))" -lt "$((10#$nnodes))" ] \
        || _launch_fail "NODE_RANK=$node_rank must be < NNODES=$nnodes (ranks are 0 .. NNODES-1)"
    _launch_int MASTER_PORT "$port" 1 65535
    _launch_int "GPUS (processes per node)" "$nproc" 1 1024
    [[ $addr =~ ^[^[:space:]]+$ ]] || _launch_fail "MASTER_ADDR='$addr' is not a host name"
    nnodes=$((10#$nnodes)) node_rank=$((10#$node_rank)) port=$((10#$port)) nproc=$((10#$nproc))
    if [ -n "${SLURM_JOB_ID:-}" ] && [ "$nnodes" -gt 1 ] && [[ ${SLURM_NTASKS:-} =~ ^[0-9]+$ ]] \
        && [ "$SLURM_NTASKS" -gt "$nnodes" ]; then
        # several tasks per node would each start a torchrun with the same NODE_RANK
        _launch_fail "SLURM_NTASKS=$SLURM_NTASKS on $nnodes nodes: start one task per node" \
            "(srun --ntasks-per-node=1); torchrun starts the GPUS processes of each node"
    fi

    local python=${PYTHON:-python}
    local cmd
    if [ "$nnodes" -eq 1 ] && [ "$nproc" -eq 1 ]; then
        cmd=("$python" -m vidseg "${fixed[@]}" "$@")
    elif [ "$nnodes" -eq 1 ] && [ -z "$addr_given" ]; then
        cmd=("$python" -m torch.distributed.run --standalone --nproc_per_node="$nproc"
             -m vidseg "${fixed[@]}" "$@")
    else
        # Static rendezvous rather than c10d: node ranks are fixed (NODE_RANK = SLURM_NODEID), so
        # global rank 0, which writes the run directory and checkpoints, always runs on
        # MASTER_ADDR, and every rank keeps its number across restarts (a resumed run restores
        # each rank's saved RNG state). c10d's elasticity (nodes joining in any order, a varying
        # node count) is of no use to a training loop with a fixed world size.
        cmd=("$python" -m torch.distributed.run --nnodes="$nnodes" --node_rank="$node_rank"
             --master_addr="$addr" --master_port="$port" --nproc_per_node="$nproc"
             -m vidseg "${fixed[@]}" "$@")
        echo "$(basename "$0"): node $node_rank of $nnodes, $nproc process(es) per node," \
            "rendezvous $addr:$port" >&2
    fi
    if [ "${DRY_RUN:-0}" != 0 ]; then
        printf '%q ' "${cmd[@]}"
        printf '\n'
        exit 0
    fi
    exec "${cmd[@]}"
}
