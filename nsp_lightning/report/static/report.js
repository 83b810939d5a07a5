/* Progressive: without script every frame shows (a filmstrip); with it, a slider picks one,
   and moving one slider of a group (the probes of one section) moves all of them. */
var films = Array.prototype.slice.call(document.querySelectorAll('.film'));
function showFrame(film, i) {
  var frames = film.querySelectorAll('.frame');
  i = Math.max(0, Math.min(frames.length - 1, i));
  film.querySelector('input[type=range]').value = String(i);
  frames.forEach(function (frame, j) { frame.hidden = j !== i; });
  film.querySelector('output').textContent = frames[i].getAttribute('data-label');
}
films.forEach(function (film) {
  var slider = film.querySelector('input[type=range]');
  var group = film.getAttribute('data-group');
  slider.addEventListener('input', function () {
    var i = Number(slider.value);
    films.forEach(function (other) {
      if (other === film || (group && other.getAttribute('data-group') === group)) { showFrame(other, i); }
    });
  });
  film.querySelector('.controls').hidden = false;
  showFrame(film, Number(slider.value));
});
