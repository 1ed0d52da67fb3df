//! Lock-free tables over shared memory.
