"""Face stack: detectors, encoders, packs, alignment, keypoint images, choice, quality.

Nothing is imported or loaded here; import the submodule you need
(``faceanchor.face.analyzer.FaceAnalyzer`` is the usual entry point).
"""
