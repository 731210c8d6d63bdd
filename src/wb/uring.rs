//! The io_uring engine. (Stub: being written.)
