//! What ships beside the code: the function binaries as Lambda runs them (nothing secret in
//! their logs at trace), the SAM template against the code's table, and the fuzz corpus
//! replayed.

mod docs;
mod durability;
mod fuzz_corpus;
mod logs;
mod shutdown;
mod sizes;
mod template;
