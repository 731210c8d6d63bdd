//! The thread-pool engine. (Stub: being written.)
