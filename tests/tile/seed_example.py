"""The seed document's Example 3, verbatim, plus the two one-step fixes and the corrected form.

``ts`` is the real package once it exports ``kernel``/``Tile``; until then a namespace with the
same names stands in, so the seed text below stays exactly as printed.
"""
import types

import tessera
import tessera.tile

if hasattr(tessera, "kernel") and hasattr(tessera, "jit"):
    ts = tessera
else:
    ts = types.SimpleNamespace(kernel=tessera.tile.kernel, Tile=tessera.tile.Tile, tile=tessera.tile,
                               bf16=tessera.dtypes.bf16, f32=tessera.dtypes.f32,
                               jit=lambda k: k.__tessera_jit__())


@ts.kernel
def fused_attention_kernel(
    Q: ts.Tile["B*H", "S", "D", ts.bf16],
    K: ts.Tile["B*H", "S", "D", ts.bf16], 
    V: ts.Tile["B*H", "S", "D", ts.bf16],
    O: ts.Tile["B*H", "S", "D", ts.bf16],
    scale: float
):
    """Custom Flash Attention kernel with manual optimization."""
    
    # Automatic tiling and memory management
    ctx = ts.tile.context()
    
    # Shared memory allocation (automatically optimized)
    smem_q = ts.tile.alloc_shared(128, 64, dtype=ts.bf16)
    smem_k = ts.tile.alloc_shared(128, 64, dtype=ts.bf16)
    smem_v = ts.tile.alloc_shared(128, 64, dtype=ts.bf16)
    
    # Online softmax state
    m_state = ts.tile.alloc_register(128, dtype=ts.f32)
    l_state = ts.tile.alloc_register(128, dtype=ts.f32)
    acc = ts.tile.alloc_register(128, 64, dtype=ts.f32)
    
    # Initialize
    ts.tile.fill(m_state, -float('inf'))
    ts.tile.fill(l_state, 0.0)
    ts.tile.fill(acc, 0.0)
    
    # Main computation loop (automatically pipelined)
    for q_tile in ts.tile.range(Q.shape[1], step=128):
        # Load Q tile (async prefetch)
        ts.tile.load_async(smem_q, Q[q_tile:q_tile+128])
        
        for kv_tile in ts.tile.range(K.shape[1], step=128):
            # Load K,V tiles (double buffered)
            ts.tile.load_async(smem_k, K[kv_tile:kv_tile+128])
            ts.tile.load_async(smem_v, V[kv_tile:kv_tile+128])
            ts.tile.barrier()
            
            # Attention scores: Q @ K^T (uses tensor cores)
            scores = ts.tile.matmul(smem_q, smem_k.T) * scale
            
            # Online softmax update (numerically stable)
            m_new, l_new, scores_norm = ts.tile.online_softmax(
                scores, m_state, l_state
            )
            
            # Attention output: P @ V (uses tensor cores)
            v_out = ts.tile.matmul(scores_norm, smem_v)
            
            # Update accumulator
            ts.tile.update_accumulator(acc, v_out, m_state, m_new, l_state, l_new)
            
            # Update states
            m_state = m_new
            l_state = l_new
    
    # Store final output
    ts.tile.store(O, acc / l_state)

# Use the custom kernel (automatically compiles for your GPU)
custom_attention = ts.jit(fused_attention_kernel)


@ts.kernel
def state_fixed_store_outside(
    Q: ts.Tile["B*H", "S", "D", ts.bf16],
    K: ts.Tile["B*H", "S", "D", ts.bf16],
    V: ts.Tile["B*H", "S", "D", ts.bf16],
    O: ts.Tile["B*H", "S", "D", ts.bf16],
    scale: float
):
    smem_q = ts.tile.alloc_shared(128, 64, dtype=ts.bf16)
    smem_k = ts.tile.alloc_shared(128, 64, dtype=ts.bf16)
    smem_v = ts.tile.alloc_shared(128, 64, dtype=ts.bf16)
    for q_tile in ts.tile.range(Q.shape[1], step=128):
        m_state = ts.tile.alloc_register(128, dtype=ts.f32)
        l_state = ts.tile.alloc_register(128, dtype=ts.f32)
        acc = ts.tile.alloc_register(128, 64, dtype=ts.f32)
        ts.tile.fill(m_state, -float('inf'))
        ts.tile.fill(l_state, 0.0)
        ts.tile.fill(acc, 0.0)
        ts.tile.load_async(smem_q, Q[q_tile:q_tile+128])
        for kv_tile in ts.tile.range(K.shape[1], step=128):
            ts.tile.load_async(smem_k, K[kv_tile:kv_tile+128])
            ts.tile.load_async(smem_v, V[kv_tile:kv_tile+128])
            scores = ts.tile.matmul(smem_q, smem_k.T) * scale
            m_new, l_new, scores_norm = ts.tile.online_softmax(scores, m_state, l_state)
            v_out = ts.tile.matmul(scores_norm, smem_v)
            ts.tile.update_accumulator(acc, v_out, m_state, m_new, l_state, l_new)
            m_state = m_new
            l_state = l_new
    ts.tile.store(O, acc / l_state)


@ts.kernel
def seed_corrected(
    Q: ts.Tile["B*H", "S", "D", ts.bf16],
    K: ts.Tile["B*H", "S", "D", ts.bf16],
    V: ts.Tile["B*H", "S", "D", ts.bf16],
    O: ts.Tile["B*H", "S", "D", ts.bf16],
    scale: float
):
    """The seed's kernel with the state initialised and the output stored inside the query-tile loop."""
    ctx = ts.tile.context()
    smem_q = ts.tile.alloc_shared(128, 64, dtype=ts.bf16)
    smem_k = ts.tile.alloc_shared(128, 64, dtype=ts.bf16)
    smem_v = ts.tile.alloc_shared(128, 64, dtype=ts.bf16)
    for q_tile in ts.tile.range(Q.shape[1], step=128):
        m_state = ts.tile.alloc_register(128, dtype=ts.f32)
        l_state = ts.tile.alloc_register(128, dtype=ts.f32)
        acc = ts.tile.alloc_register(128, 64, dtype=ts.f32)
        ts.tile.fill(m_state, -float('inf'))
        ts.tile.fill(l_state, 0.0)
        ts.tile.fill(acc, 0.0)
        ts.tile.load_async(smem_q, Q[q_tile:q_tile+128])
        for kv_tile in ts.tile.range(K.shape[1], step=128):
            ts.tile.load_async(smem_k, K[kv_tile:kv_tile+128])
            ts.tile.load_async(smem_v, V[kv_tile:kv_tile+128])
            ts.tile.barrier()
            scores = ts.tile.matmul(smem_q, smem_k.T) * scale
            m_new, l_new, scores_norm = ts.tile.online_softmax(scores, m_state, l_state)
            v_out = ts.tile.matmul(scores_norm, smem_v)
            ts.tile.update_accumulator(acc, v_out, m_state, m_new, l_state, l_new)
            m_state = m_new
            l_state = l_new
        ts.tile.store(O[q_tile:q_tile+128], acc / l_state[:, None])


seed_corrected_attention = ts.jit(seed_corrected)
