"""Export: TFLite/LiteRT conversion, the interpreter wrapper, verification and the `.tfcp`
model archive (Deep Compression: sparse + clustered + Huffman).

The archive sits here, above the techniques, because it stores any compressed model and
registers every layer class to load one."""
