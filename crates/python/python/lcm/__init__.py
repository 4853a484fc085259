"""lcm: Large Concept Models in Rust.

    import lcm
    lcm.segment("One sentence. Another one.")          # ['One sentence.', 'Another one.']
    encoder = lcm.Encoder("minilm")
    vectors = encoder.encode(["A sentence."])          # numpy float32, shape (1, 384)
    model = lcm.LCM.load("runs/tt", store="store/")
    model.generate("A prompt. Of two sentences.", max_sentences=4, seed=1)
    model.next_concepts(vectors)                       # the next concept, (384,)
    lcm.Decoder(store="store/").decode(vectors)        # ['A sentence.'] if the store has it
    for document in lcm.ConceptStore("store/"): ...    # id, source, sentences, concepts

Every call runs the same library code as the `lcm` command and releases the GIL while it
works; errors arrive as `lcm.LcmError` with the library's message.
"""

from ._lcm import LCM, ConceptStore, Decoder, Encoder, LcmError, segment

__all__ = ["LCM", "ConceptStore", "Decoder", "Encoder", "LcmError", "segment"]
