//! The T-SQL subset: lexer, syntax tree and parser.

pub mod ast;
pub mod lexer;
pub mod parser;
