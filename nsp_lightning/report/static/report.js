/* Progressive: without script every frame shows (a filmstrip); with it, one slider per group
   (the films of one section: an analysis's probes or methods) picks the frame of all of them. */
var films = Array.prototype.slice.call(document.querySelectorAll('.film'));
function showFrame(film, i) {
  var frames = film.querySelectorAll('.frame');
  i = Math.max(0, Math.min(frames.length - 1, i));
  frames.forEach(function (frame, j) { frame.hidden = j !== i; });
  var slider = film.querySelector('input[type=range]');
  if (slider) {
    slider.value = String(i);
    film.querySelector('output').textContent = frames[i].getAttribute('data-label');
  }
}
films.forEach(function (film) {
  var slider = film.querySelector('input[type=range]');
  if (!slider) { return; }
  var group = film.getAttribute('data-group');
  slider.addEventListener('input', function () {
    var i = Number(slider.value);
    films.forEach(function (other) {
      if (other.getAttribute('data-group') === group) { showFrame(other, i); }
    });
  });
  film.querySelector('.controls').hidden = false;
  films.forEach(function (other) {
    if (other.getAttribute('data-group') === group) { showFrame(other, Number(slider.value)); }
  });
});
