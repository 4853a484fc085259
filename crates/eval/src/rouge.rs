//! ROUGE-L (longest common subsequence F-measure) as Google's `rouge-score` computes it, and
//! the length ratio of a summary to its reference (issue 17 item 5).
