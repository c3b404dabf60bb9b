//! streamgate operator.
