"""Single-image prediction: ``predict`` (the predictor behind ``bclib predict``) and the notebook-08 app:
``catalog`` (the models and sample images on offer), ``views`` (its HTML, from ``template.html``) and
``widgets`` (the ipywidgets app and the static view)."""
